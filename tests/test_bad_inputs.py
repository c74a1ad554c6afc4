"""Bad input never costs a user data, runs a command, or yields a silent wrong result (issue #14).

One case per family: each asserts that the message names the culprit (file, row, column,
param, value) and that no output was touched."""
from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from pipeline import paths
from pipeline.artifacts import atomic_dir, atomic_path, sweep_stale
from pipeline.errors import PipelineError
from pipeline.names import check_launcher, check_name
from tests.helpers import FIXTURES, REPO


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _stage(root: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", *args], cwd=root, env=env, capture_output=True, text=True,
                          timeout=120)


@pytest.fixture
def user_data(tmp_path, monkeypatch) -> Path:
    """A project root (the cwd) whose data/local/mine/ holds the user's own files."""
    mine = tmp_path / "data" / "local" / "mine"
    shutil.copytree(FIXTURES / "local", mine)
    shutil.copy(REPO / "params.yaml", tmp_path / "params.yaml")
    monkeypatch.chdir(tmp_path)
    return mine


# --- 1. names are data: path traversal ------------------------------------------------------

@pytest.mark.parametrize("stage", ["stages.download", "stages.prepare"])
def test_traversal_dataset_name_is_refused_and_user_data_kept(user_data, stage):
    before = _snapshot(user_data)
    r = _stage(user_data.parents[2], stage, "../local/mine")
    assert r.returncode == 2
    assert "invalid dataset name '../local/mine'" in r.stderr
    assert _snapshot(user_data) == before
    assert not (user_data.parents[1] / "raw").exists() and not (user_data.parents[1] / "prepared").exists()


@pytest.mark.parametrize("name", ["../local/mine", "..", "a/b", "x;touch /tmp/pwned", "ML-100K", "-rf", "a.b",
                                  "", "x" * 65, "ml-100k\n", "$(id)"])
def test_names_outside_the_pattern_are_refused_before_any_path(name):
    with pytest.raises(PipelineError, match="invalid name"):
        check_name(name)
    with pytest.raises(PipelineError):
        paths.prepared(name)


def test_every_default_name_fits_the_pattern():
    from pipeline.config.sections import validate_params

    validate_params(yaml.safe_load((REPO / "params.yaml").read_text()))  # names are config-layer types
    for name in ("ml-100k", "amazon-grocery", "mf_rating", "lambda_1e-3", "no_aux", "pe"):
        assert check_name(name) == name


def test_atomic_writers_never_swap_user_data_or_leave_data(user_data):
    before = _snapshot(user_data)
    for target in (user_data, Path("data/prepared/../local/mine"), Path("data/local"), Path("data"), Path(".")):
        with pytest.raises(PipelineError, match="refused"):
            with atomic_dir(target) as tmp:
                (tmp / "interactions.csv").write_text("x\n")
    with pytest.raises(PipelineError, match="refused"):
        with atomic_path(user_data / "items.csv") as tmp:
            tmp.write_text("x\n")
    # an output folder that is a symlink to the user's data: the swap replaces the link, never
    # what it points to
    (Path("data/prepared")).mkdir(parents=True)
    os.symlink(user_data.resolve(), "data/prepared/mine")
    with atomic_dir(paths.prepared("mine")) as tmp:
        (tmp / "interactions.parquet").write_text("output")
    assert Path("data/prepared/mine").is_dir() and not Path("data/prepared/mine").is_symlink()
    assert not os.path.lexists("data/prepared/.mine.old")
    assert _snapshot(user_data) == before
    # outside data/, the cache and the temp dir: refused (here: the home directory)
    with pytest.raises(PipelineError, match="outside"):
        with atomic_path(Path.home() / ".llmrec-test-output"):
            pass
    assert not (Path.home() / ".llmrec-test-output").exists()


def test_stale_temp_folders_of_a_killed_writer_are_swept(user_data):
    out = Path("data/kcore/mine")
    out.mkdir(parents=True)
    (out / "a.parquet").write_text("old")
    left = [out.with_name(".mine.abcd1234.tmp"), out.with_name(".mine.old")]
    for d in left:
        d.mkdir()
        (d / "junk").write_text("x")
    unrelated = out.with_name(".other.abcd1234.tmp")
    unrelated.mkdir()
    with atomic_dir(out) as tmp:
        (tmp / "a.parquet").write_text("new")
    assert not any(d.exists() for d in left) and unrelated.exists()
    assert (out / "a.parquet").read_text() == "new"
    # killed between the swap's two renames: the previous output is put back, not lost
    os.replace(out, out.with_name(".mine.old"))
    assert sweep_stale(out) == [] and (out / "a.parquet").read_text() == "new"


# --- 2. names are data: shell injection ------------------------------------------------------

def _resolved_cmds(tmp_path: Path, params: dict) -> dict[str, str]:
    from dvc.repo import Repo

    shutil.copy(REPO / "dvc.yaml", tmp_path / "dvc.yaml")
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    Repo.init(str(tmp_path), no_scm=True).close()
    with Repo(str(tmp_path)) as repo:
        return {s.name: s.cmd for s in repo.index.stages}


def test_dvc_yaml_quotes_every_name_it_puts_in_a_command(tmp_path):
    """Even a name or launcher that got past validation stays one argument: the shell never sees
    ';' -- which matters under a plain `dvc repro`, where the shell runs before any Python."""
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    evil, launcher = "x;touch PWNED", "python;touch PWNED"
    params["datasets"] = [evil]
    params["orchestration"]["launcher"] = launcher
    cmds = _resolved_cmds(tmp_path, params)
    assert cmds
    for name, cmd in cmds.items():
        argv = shlex.split(cmd)
        module = next(i + 1 for i, tok in enumerate(argv) if tok == "-m" and argv[i + 1].startswith("stages."))
        if "@" in name:  # a foreach/matrix stage: the dataset is the first argument after the module
            assert argv[module + 1] == evil, cmd
        if name.split("@")[0] in ("sft", "joint_train"):
            assert argv[:4] == ["python", "-m", "pipeline.orchestration.launch", launcher], cmd
    # run two of them through a real shell, as DVC does: refused, and nothing injected ran
    from pipeline.orchestration.runner import dvc_env  # what the flow runs DVC with: the venv's python first on PATH

    env = {**dvc_env(), "PYTHONPATH": str(REPO)}
    for stage, message in ((f"download@{evil}", "invalid dataset name"), (f"sft@{evil}-full", "orchestration.launcher")):
        r = subprocess.run(cmds[stage], shell=True, cwd=tmp_path, env=env, capture_output=True, text=True,
                           timeout=120)
        assert r.returncode == 2 and message in r.stderr, (cmds[stage], r.stderr)
    assert not list(tmp_path.rglob("PWNED"))


def test_params_are_validated_before_any_stage_command_runs(tmp_path):
    """A name holding a quote escapes the commands' quoting, and DVC writes it into a shell
    command before any of our Python runs. So every stage depends on check_params, whose command
    holds no param, and check_params refuses the file: `dvc repro` stops before the shell sees it."""
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    check = stages.pop("check_params")
    assert "${" not in check["cmd"] and "params.yaml" in check["deps"]
    for name, st in stages.items():
        body = st.get("do", st)
        assert "data/checks/params.json" in body["deps"], name
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["datasets"] = ["x';touch PWNED;'"]
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    r = _stage(tmp_path, "stages.check_params")
    assert r.returncode == 2 and "datasets[0]" in r.stderr and "not a valid name" in r.stderr, r.stderr
    assert not (tmp_path / "data").exists()
    (tmp_path / "params.yaml").write_text((REPO / "params.yaml").read_text())
    r = _stage(tmp_path, "stages.check_params")
    assert r.returncode == 0, r.stderr
    assert json.loads((tmp_path / "data/checks/params.json").read_text()) == {"valid": True}


def test_launch_execs_a_valid_launcher_without_a_shell(tmp_path):
    from pipeline.orchestration.launch import command

    assert command("accelerate launch --config_file configs/a.yaml", ["-m", "stages.sft", "ml-100k", "full"]) == \
        ["accelerate", "launch", "--config_file", "configs/a.yaml", "-m", "stages.sft", "ml-100k", "full"]
    r = _stage(tmp_path, "pipeline.orchestration.launch", "python", "-c", "import sys; print('ran', sys.argv[1:])", "a;b")
    assert r.returncode == 0 and r.stdout.strip() == "ran ['a;b']", r.stderr


def test_resolved_commands_of_the_repo_params_are_safe(tmp_path):
    """Over the real dvc.yaml + params.yaml: every token of every command is plain."""
    import re

    params = yaml.safe_load((REPO / "params.yaml").read_text())
    check_launcher(params["orchestration"]["launcher"])
    for cmd in _resolved_cmds(tmp_path, params).values():
        for tok in shlex.split(cmd):
            assert re.fullmatch(r"[A-Za-z0-9_./:,+=@%-]+", tok), (cmd, tok)


@pytest.mark.parametrize("launcher, ok", [
    ("python", True),
    ("accelerate launch --config_file configs/accelerate_zero3.yaml", True),
    ("torchrun --nproc_per_node=2", True),
    ("python;touch /tmp/pwned", False),
    ("python -u -X dev", True),
    ("python -c import os", False),  # python itself would run other code than the stage
    ("python -uc print", False),
    ("python -m http.server", False),
    ("accelerate launch -m pdb", False),
    ("accelerate launch $(id)", False),
    ("bash -c x", False),
    ("python  -u", False),
    ("accelerate launch --x 'y'", False),
    ("python\ntouch", False),
])
def test_launcher_grammar(launcher, ok):
    if ok:
        assert check_launcher(launcher) == launcher
    else:
        with pytest.raises(PipelineError, match="orchestration.launcher"):
            check_launcher(launcher)


@pytest.mark.parametrize("args, culprit", [
    (["--datasets", "x;touch PWNED"], "datasets[0] = 'x;touch PWNED'"),
    (["-S", 'orchestration.launcher="python; touch PWNED"'], "orchestration.launcher"),
    (["-S", "joint.experiments=[bdlm, ../../x]"], "joint.experiments[1] = '../../x'"),
])
def test_flow_refuses_injection_before_anything_runs(tmp_path, capsys, args, culprit):
    from pipeline.orchestration.flow import main

    shutil.copy(REPO / "dvc.yaml", tmp_path / "dvc.yaml")
    shutil.copy(REPO / "params.yaml", tmp_path / "params.yaml")
    before = (tmp_path / "params.yaml").read_bytes()
    assert main([*args, "--root", str(tmp_path), "--list"]) == 2
    assert culprit in capsys.readouterr().err
    assert (tmp_path / "params.yaml").read_bytes() == before
    assert not list(tmp_path.rglob("PWNED"))


# --- 3-5. readers are strict: empty ids, non-finite numbers, truncated files ----------------

HEADER = "user_id,item_id,rating,timestamp\n"


def _local(folder: Path, interactions: str | None = None, parquet=None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    if parquet is not None:
        import pyarrow.parquet as pq

        pq.write_table(parquet, folder / "interactions.parquet")
    else:
        (folder / "interactions.csv").write_text(interactions)
    shutil.copy(FIXTURES / "local/items.csv", folder / "items.csv")
    return folder


@pytest.mark.parametrize("rows, message", [
    ("u1,i1,5,1\n,i2,4,2\n", r"column 'user_id' is empty in data row 2 \(line 3\) \(value ''\)"),
    ("u1,i1,5,1\nu2,  ,4,2\n", r"column 'item_id' is empty in data row 2 \(line 3\) \(value '  '\)"),
    ("u1,i1,5,1\nu2,i2,inf,2\n", r"column 'rating' is not finite in data row 2 \(line 3\) \(value inf\)"),
    ("u1,i1,nan,1\n", r"column 'rating' is not finite in data row 1 \(line 2\) \(value nan\)"),
    ("u1,i1,5,1\nu2,i2,4,2020-01-01\n",
     r"column 'timestamp' has type string, expected int64: data row 2 \(line 3\) has '2020-01-01'"),
    ("u1,i1,5,1\nu2,i2,4,2\nu3,i", r"line 4 has 2 field\(s\), the header has 4: 'u3,i'; it is the last line and "
                                   r"the file does not end with a newline: a truncated copy\?"),
    ("u1,i1,5,1\nu2,i2\nu3,i3,4,3\n", r"line 3 has 2 field\(s\), the header has 4: 'u2,i2'$"),
])
def test_local_csv_errors_name_file_row_column_and_value(tmp_path, rows, message):
    from pipeline.data.readers import read_raw

    folder = _local(tmp_path / "mine", HEADER + rows)
    with pytest.raises(PipelineError, match=r"interactions\.csv: " + message):
        read_raw("local", folder)


def test_local_parquet_non_finite_rating_is_refused(tmp_path):
    import pyarrow as pa

    from pipeline.data.readers import read_raw

    table = pa.table({"user_id": ["u", "v", "w"], "item_id": ["i", "j", "k"], "rating": [1.0, 2.0, float("nan")],
                      "timestamp": [1, 2, 3]})
    folder = _local(tmp_path / "mine", parquet=table)
    with pytest.raises(PipelineError, match=r"interactions\.parquet: column 'rating' is not finite in data row 3 "
                                            r"\(value nan\)"):
        read_raw("local", folder)


@pytest.mark.parametrize("line, reason", [("22\t377\tnan\t878887116", r"'nan' is not a finite number"),
                                          ("\t377\t3\t878887116", "empty user id")])
def test_official_reader_refuses_a_bad_row_with_its_line(ml100k_official, tmp_path, line, reason):
    from pipeline.data.readers import read_raw
    from tests.helpers import make_zip

    data = (FIXTURES / "ml-100k/u.data").read_text().splitlines()
    data[4] = line
    (tmp_path / "u.data").write_text("\n".join(data) + "\n")
    make_zip(ml100k_official / "ml-100k.zip", {"ml-100k/u.data": tmp_path / "u.data",
                                               "ml-100k/u.item": FIXTURES / "ml-100k/u.item"})
    with pytest.raises(PipelineError, match=rf"u\.data:5: malformed line \({reason}\)"):
        read_raw("movielens-100k", ml100k_official)


def test_prepare_stage_refuses_a_bad_local_file_and_keeps_its_output(tmp_path):
    raw = _local(tmp_path / "data/raw/mine", HEADER + "u1,i1,5,1\n,i2,4,2\n")
    (raw / "checksums.json").write_text('{"format": "local", "route": "local", "expected": {}}')
    out = tmp_path / "data/prepared/mine"
    out.mkdir(parents=True)
    (out / "interactions.parquet").write_text("previous output")
    shutil.copy(REPO / "params.yaml", tmp_path / "params.yaml")
    r = _stage(tmp_path, "stages.prepare", "mine")
    assert r.returncode == 2, r.stderr
    assert "interactions.csv: column 'user_id' is empty in data row 2 (line 3)" in r.stderr
    assert (out / "interactions.parquet").read_text() == "previous output"
    assert sorted(p.name for p in out.parent.iterdir()) == ["mine"]


def test_prepare_refuses_a_raw_file_cut_or_changed_since_download(tmp_path):
    from pipeline.artifacts import file_digest
    from pipeline.data.prepare import prepare

    raw = _local(tmp_path / "raw", HEADER + "u1,i1,5,1\nu2,i2,4,2\n")
    files = {p.name: dict(zip(("sha256", "size"), file_digest(p))) for p in raw.iterdir()}
    manifest = {"format": "local", "route": "local", "expected": {}, "files": files}
    inter, _, _ = prepare(raw, manifest)  # intact: read as usual
    assert inter.num_rows == 2
    data = raw / "interactions.csv"
    data.write_bytes(data.read_bytes()[:-9])  # an interrupted copy that still parses
    with pytest.raises(PipelineError, match=r"interactions\.csv: truncated since download .*checksums\.json records"):
        prepare(raw, manifest)


# --- 8-10. no silent wrong results: degenerate configs, NaN losses, NaN embeddings ----------

def _repo_params() -> dict:
    return yaml.safe_load((REPO / "params.yaml").read_text())


@pytest.mark.parametrize("where, key, value, message", [
    ("train", "epochs", 0, r"domain\.train\.epochs = 0 must be >= 1"),
    ("mf", "epochs", 0, r"domain\.mf\.epochs = 0 must be >= 1"),
    ("mf", "dim", 0, r"domain\.mf\.dim = 0 must be an integer >= 1"),
    ("mf", "lr", float("nan"), r"domain\.mf\.lr = nan must be a finite number > 0"),
    ("train", "patience", -1, r"domain\.train\.patience = -1 must be >= 1"),
    ("train", "valid_k", 0, r"domain\.train\.valid_k = 0 must be >= 1"),
    ("mf", "threads", 0, r"domain\.mf\.threads = 0 must be >= 1"),
])
def test_degenerate_domain_configs_are_refused(where, key, value, message):
    from pipeline.models.trainer import domain_configs

    params = _repo_params()
    params["domain"][where][key] = value
    # a domain.train value reaches a model that does not override it (gmf); mf has its own
    # epochs and patience
    with pytest.raises(PipelineError, match=message):
        domain_configs(params, "gmf" if where == "train" else "mf")


def test_pretrain_stage_with_zero_epochs_keeps_the_previous_model(tmp_path):
    params = _repo_params()
    params["domain"]["mf"]["epochs"] = 0
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    out = tmp_path / "data/domain/mine/mf"
    out.mkdir(parents=True)
    (out / "model.safetensors").write_text("the trained model")
    r = _stage(tmp_path, "stages.pretrain_domain", "mine", "mf")
    assert r.returncode == 2, r.stderr
    assert "domain.mf.epochs = 0: Input should be greater than or equal to 1" in r.stderr
    assert (out / "model.safetensors").read_text() == "the trained model"
    assert sorted(p.name for p in out.parent.iterdir()) == ["mf"]


def test_a_nan_training_loss_stops_the_domain_trainer_with_epoch_and_step():
    import numpy as np

    from pipeline.models.collaborative import MFRating
    from pipeline.models.trainer import TrainConfig, fit
    from tests.helpers import planted

    data, _ = planted(per_user=9)
    data.ratings[5] = np.nan  # what a NaN rating that got past the reader did
    model = MFRating(data.n_users, data.n_items, {"dim": 8, "batch_size": 64})
    with pytest.raises(PipelineError, match=r"mf_rating: training loss is nan at epoch 1, step \d+"):
        fit(model, data, lambda m: 0.0, TrainConfig(epochs=3, lr=0.02))


def test_nan_in_exported_embeddings_is_refused_naming_file_and_row():
    import torch

    from pipeline.llm.vocab import expand_vocab
    from tests.llm_tiny import tiny_llama, tiny_tokenizer

    tok = tiny_tokenizer()
    model = tiny_llama(tok)
    n_tokens = len(tok)
    tables = {"user": torch.randn(7, 16), "item": torch.randn(11, 16)}
    tables["item"][4, 3] = float("nan")
    with pytest.raises(PipelineError, match=r"emb\.safetensors: 'item' table row 4 \(<iid_4>\) has a non-finite "
                                            r"value nan at column 3"):
        expand_vocab(model, tok, 7, 11, "pe", tables, tables_source="emb.safetensors")
    assert len(tok) == n_tokens  # refused before a token was added


@pytest.mark.parametrize("key, value", [("steps", 0), ("batch_size", 0), ("lr", float("inf")), ("lr", 0.0),
                                        ("row_lr", 0.0), ("row_lr", -1e-3), ("lora_r", 0), ("lora_r", -4),
                                        ("bucket", 0)])
def test_degenerate_sft_configs_are_refused(key, value):
    from stages.sft import sft_config

    params = _repo_params()
    params["sft"][key] = value
    with pytest.raises(PipelineError, match=rf"sft\.{key} = {value!r}"):
        sft_config(params)


@pytest.mark.parametrize("changes, message", [
    ({"lora": True, "lora_r": 0}, r"params\.yaml: sft\.lora_r must be >= 1, got 0"),
    ({"lora": True, "lora_r": -2}, r"params\.yaml: sft\.lora_r must be >= 1, got -2"),
    ({"lora": True, "row_lr": 0.0}, r"params\.yaml: sft\.row_lr must be > 0, got 0\.0"),
    ({"row_lr": -1e-3}, r"params\.yaml: sft\.row_lr must be > 0, got -0\.001"),
])
def test_bad_lora_rank_and_row_lr_are_refused_by_train_before_it_writes(tmp_path, changes, message):
    from pipeline.llm.sft import SFTConfig, train
    from tests.llm_tiny import tiny_llama
    from tests.llm_tiny import samples, tokenizer_with_ids

    tok = tokenizer_with_ids()
    out = tmp_path / "out"
    cfg = SFTConfig(steps=2, batch_size=4, lr=1e-3, warmup_steps=0, max_len=96, **changes)
    with pytest.raises(PipelineError, match=message):
        train(tiny_llama(tok), tok, *samples(), cfg, output_dir=out)
    assert not out.exists()


def test_a_nan_training_loss_stops_sft_naming_the_step(tmp_path):
    import torch

    from pipeline.llm.sft import SFTConfig, train
    from tests.llm_tiny import tiny_llama
    from tests.llm_tiny import samples, tokenizer_with_ids

    tok = tokenizer_with_ids()
    model = tiny_llama(tok)
    with torch.no_grad():  # what a NaN <iid> row pre-loaded into the vocabulary did
        model.get_input_embeddings().weight[-3:] = float("nan")
    out = tmp_path / "out"
    with pytest.raises(PipelineError, match=r"sft: training loss is \[nan\] at step 1 of 4"):
        train(model, tok, *samples(), SFTConfig(steps=4, batch_size=4, lr=1e-3, warmup_steps=0, max_len=96),
              output_dir=out)
    assert not out.exists()


# --- the config layer: every section typed, ranged, no unknown keys -------------------------

def _problems(mutate) -> str:
    from pipeline.config.sections import validate_params

    params = _repo_params()
    mutate(params)
    with pytest.raises(PipelineError) as e:
        validate_params(params)
    return str(e.value)


@pytest.mark.parametrize("mutate, message", [
    # 6. an overflowing popularity exponent gave uniform negatives without a word
    (lambda p: p["negatives"].update(popularity_alpha=float("inf")),
     "negatives.popularity_alpha = inf: Input should be a finite number"),
    (lambda p: p["negatives"].update(popularity_alpha=120),
     "negatives.popularity_alpha = 120: Input should be less than or equal to 10"),
    (lambda p: p["prompts"].update(popularity_alpha=-1.0),
     "prompts.popularity_alpha = -1.0: Input should be greater than or equal to 0"),
    # misspelt keys used to be ignored: kcore ran without its rating filter
    (lambda p: p["kcore"].update(min_ratings=4),
     "unknown key 'kcore.min_ratings'; did you mean 'min_rating'?"),
    (lambda p: p.update(evalution={"seed": 1}), "unknown key 'evalution'; did you mean 'evaluation'?"),
    (lambda p: p["joint"]["experiment"]["bdlm"].update(lamda=1),
     "unknown key 'joint.experiment.bdlm.lamda'; did you mean 'lambda'?"),
    (lambda p: p["joint"].update({"lambda": float("nan")}), "joint.lambda = nan: Input should be a finite number"),
    (lambda p: p["joint"]["train"].update(refresh_every=0),
     "joint.train.refresh_every = 0: Input should be greater than or equal to 1"),
    (lambda p: p["joint"]["train"].update(drs_domain_weight=-0.5),
     "joint.train.drs_domain_weight = -0.5: Input should be greater than or equal to 0"),
    (lambda p: (p["llm"].update(vocab_modes=["pe", "text"], variants=["full", "no_et"])),
     "joint.experiment.wo_pe starts from vocab 'rand', which llm.vocab_modes ['pe', 'text'] does not build"),
    # ranges, types and choices
    (lambda p: p["kcore"].update(seed=-1), "kcore.seed = -1: Input should be greater than or equal to 0"),
    (lambda p: p["kcore"].update(user_k=True), "kcore.user_k = True: Input should be a valid integer"),
    (lambda p: p["sft"].update(lr="1e-3"), "sft.lr = '1e-3': Input should be a valid number (a number in quotes is a string"),
    (lambda p: p["domain"]["train"].update(patience=0), "domain.train.patience = 0: Input should be greater than"),
    (lambda p: p["negatives"].update(text_anchor="user"),
     "negatives.text_anchor = 'user': Input should be 'history' or 'positive'"),
    (lambda p: p["negatives"].update(text_history=0), "negatives.text_history = 0: Input should be greater than"),
    (lambda p: p["sft"]["task_weights"].update(interactoin=1.0), "sft.task_weights.interactoin (a key)"),
    (lambda p: p.update(evaluation={"confidence": 1.0, "bootstrap_samples": 1000, "seed": 0}),
     "evaluation.confidence = 1.0: Input should be less than 1"),
    (lambda p: p.update(evaluation={"confidence": 0.9, "bootstrap_samples": 10, "seed": 0}),
     "evaluation.bootstrap_samples = 10: Input should be greater than or equal to 100"),
    # cross-field rules
    (lambda p: p["llm"].update(variants=["full", "nope"]), "llm.variants lists ['nope'], which llm.variant does not"),
    (lambda p: p["domain"]["sasrec"].update(dim=63), "domain.sasrec: dim 63 must be a multiple of n_heads 2"),
    (lambda p: p["sft"].update(warmup_steps=41), "sft: warmup_steps 41 exceeds steps 40"),
    (lambda p: p["sft"].update(row_lr=0.0), "sft.row_lr = 0.0: Input should be greater than 0"),
    (lambda p: p["sft"].update(lora_r=0), "sft.lora_r = 0: Input should be greater than or equal to 1"),
    (lambda p: p["sft"].update(bucket=0), "sft.bucket = 0: Input should be greater than or equal to 1"),
    (lambda p: p["llm"]["variant"]["align"].update(align=-1.0),
     "llm.variant.align.align = -1.0: Input should be greater than or equal to 0"),
    (lambda p: p["llm"]["variant"]["align"].update(vocab="text"),
     "align = 5.0 needs user tokens (vocab pe or rand)"),
    (lambda p: p["domain"]["sasrec"].update(bucket=0),
     "domain.sasrec.bucket = 0: Input should be greater than or equal to 1"),
    (lambda p: p["domain"]["gru4rec"].update(max_len=0),
     "domain.gru4rec.max_len = 0: Input should be greater than or equal to 1"),
    (lambda p: p["domain"]["sasrec"].update(loss="sampled", n_sampled=0),
     "domain.sasrec.n_sampled = 0: Input should be greater than or equal to 1"),
    (lambda p: p["domain"]["bert4rec"].update(loss="bce"),
     "domain.bert4rec.loss = 'bce': Input should be 'ce' or 'sampled'"),
    (lambda p: p["domain"]["lightgcn"].update(valid_k=0),
     "domain.lightgcn.valid_k = 0: Input should be greater than or equal to 1"),
    (lambda p: p["domain"]["train"].update(threads=0),
     "domain.train.threads = 0: Input should be greater than or equal to 1"),
    (lambda p: p["domain"]["train"].update(mixed_precision="fp16"),
     "domain.train.mixed_precision = 'fp16': Input should be 'auto', 'no' or 'bf16'"),
    (lambda p: p["domain"]["gru4rec"].update(sampled_alpha=11.0),
     "domain.gru4rec.sampled_alpha = 11.0: Input should be less than or equal to 10"),
    (lambda p: p["domain"].update(export=["lightgcn", "ncf"], models=["lightgcn", "mf"]),
     "domain.export lists ['ncf'], which domain.models does not train"),
    (lambda p: p["llm"].update(preload_from="mf"), "llm.preload_from 'mf' is not in domain.export"),
    # names and the launcher (cases 1, 2)
    (lambda p: p.update(datasets=["../local/mine"]), "datasets[0] = '../local/mine': not a valid name"),
    (lambda p: p["orchestration"].update(launcher="python; touch PWNED"), "orchestration.launcher = 'python; touch"),
])
def test_params_errors_name_the_key_the_value_and_the_range(mutate, message):
    text = _problems(mutate)
    assert text.startswith("params.yaml: 1 problem(s):"), text
    assert message in text, text


def test_every_problem_is_listed_at_once():
    def two(p):
        p["kcore"]["user_k"] = 0
        p["negatives"]["text_backend"] = "bm25"
    text = _problems(two)
    assert "2 problem(s)" in text and "kcore.user_k = 0" in text
    assert "negatives.text_backend = 'bm25': Input should be 'tfidf' or 'minilm'" in text


def test_the_domain_model_list_matches_the_registry():
    from pipeline.config.sections import DOMAIN_MODELS
    from pipeline.models.registry import MODELS

    assert set(DOMAIN_MODELS) == set(MODELS)


def test_a_stage_refuses_a_misspelt_key_before_touching_its_output(tmp_path):
    params = _repo_params()
    params["kcore"]["min_ratings"] = 4
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    out = tmp_path / "data/kcore/mine"
    out.mkdir(parents=True)
    (out / "interactions.parquet").write_text("previous output")
    r = _stage(tmp_path, "stages.kcore", "mine")
    assert r.returncode == 2
    assert "params.yaml: 1 problem(s):\n  unknown key 'kcore.min_ratings'; did you mean 'min_rating'?" in r.stderr
    assert (out / "interactions.parquet").read_text() == "previous output"


def test_broken_yaml_names_the_file_and_line(tmp_path):
    from pipeline.config.params import load_params

    (tmp_path / "params.yaml").write_text("kcore:\n  user_k: 5\n   item_k: [5\n")
    with pytest.raises(PipelineError, match=r"params\.yaml:3:\d+: not valid YAML"):
        load_params(tmp_path / "params.yaml")


def test_flow_override_out_of_range_leaves_params_untouched(tmp_path, capsys):
    from pipeline.orchestration.flow import main

    shutil.copy(REPO / "dvc.yaml", tmp_path / "dvc.yaml")
    shutil.copy(REPO / "params.yaml", tmp_path / "params.yaml")
    before = (tmp_path / "params.yaml").read_bytes()
    assert main(["-S", "negatives.popularity_alpha=120", "--root", str(tmp_path), "--list"]) == 2
    assert "negatives.popularity_alpha = 120: Input should be less than or equal to 10" in capsys.readouterr().err
    assert (tmp_path / "params.yaml").read_bytes() == before


# --- 7. clean recovery after a kill -9 of the flow -------------------------------------------

KILLED_FLOW = """
import sys, time
from pipeline.config.params import overridden_params
with overridden_params(sys.argv[1], {"negatives.seed": 7, "datasets": ["ml-1m"]}):
    print("overridden", flush=True)
    time.sleep(120)
"""


def _killed_flow(root: Path) -> int:
    """A flow process killed with SIGKILL while its -S overrides are in params.yaml."""
    import signal

    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-c", KILLED_FLOW, str(root)], cwd=root, env=env,
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "overridden"
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    return proc.pid


@pytest.fixture
def project(tmp_path) -> Path:
    shutil.copy(REPO / "dvc.yaml", tmp_path / "dvc.yaml")
    shutil.copy(REPO / "params.yaml", tmp_path / "params.yaml")
    return tmp_path


def test_overrides_keep_params_comments(project):
    from pipeline.config.params import overridden_params

    before = (project / "params.yaml").read_text()
    with overridden_params(project, {"negatives.seed": 7, "llm.variants": ["full"], "kcore.min_rating": 4}):
        now = (project / "params.yaml").read_text()
        assert "  seed: 7\n" in now and "variants: [full]\n" in now
        assert "  min_rating: 4          # e.g. 4 keeps only ratings >= 4 (before the k-core)\n" in now
        # every comment line is still there
        assert [l for l in before.splitlines() if l.lstrip().startswith("#")] == \
               [l for l in now.splitlines() if l.lstrip().startswith("#")]
    assert (project / "params.yaml").read_text() == before


def test_after_a_kill_stages_refuse_and_the_next_flow_restores_params(project, capsys):
    from pipeline.orchestration.flow import main
    from pipeline.config.params import load_params

    before = (project / "params.yaml").read_bytes()
    pid = _killed_flow(project)
    left = (project / "params.yaml").read_text()
    assert "ml-1m" in left and "# Datasets that `dvc repro` runs" in left  # comments survived the kill
    # a plain `dvc repro` now would run on the leftover values: every stage refuses
    with pytest.raises(PipelineError, match=rf"still holds the -S overrides of flow run pid {pid}, which was "
                                            r"interrupted.*--restore-params"):
        load_params(project / "params.yaml")
    assert main(["--root", str(project), "--restore-params"]) == 0
    assert f"flow run pid {pid} was interrupted" in capsys.readouterr().err
    assert (project / "params.yaml").read_bytes() == before
    assert sorted(p.name for p in project.iterdir()) == ["dvc.yaml", "params.yaml"]
    load_params(project / "params.yaml")


def test_after_a_kill_an_edited_params_file_is_never_overwritten(project, capsys):
    from pipeline.orchestration.flow import main

    _killed_flow(project)
    edited = (project / "params.yaml").read_text().replace("seed: 7", "seed: 8")
    (project / "params.yaml").write_text(edited)
    assert main(["--root", str(project), "--list"]) == 2
    assert "changed after an interrupted flow run wrote its overrides" in capsys.readouterr().err
    assert (project / "params.yaml").read_text() == edited
    assert (project / "params.yaml.flow-backup").exists()


def test_a_second_flow_with_overrides_waits_for_the_running_one(project):
    from pipeline.config.params import overridden_params
    from pipeline.config.params import load_params

    with overridden_params(project, {"negatives.seed": 7}):
        load_params(project / "params.yaml")  # the running flow's own stages read its overrides
        with pytest.raises(PipelineError, match=rf"flow run pid {os.getpid()} is running with its own overrides"):
            with overridden_params(project, {"negatives.seed": 8}):
                pass
        with overridden_params(project, {}) as params:  # a gpu-deployment subflow: no overrides of its own
            assert params["negatives"]["seed"] == 7


def test_the_temporary_server_of_a_killed_flow_is_stopped_on_the_next_start(project, capsys):
    """kill -9 of the flow skips Prefect's atexit stop; the next start stops the orphan, and only
    a process whose command line is Prefect's server (a reused pid is never hit)."""
    import json
    import socket

    from pipeline.orchestration.flow import SERVER_RECORD, main

    sleeper = "import sys, time; time.sleep(120)"
    server = subprocess.Popen([sys.executable, "-c", sleeper, "prefect.server.api.server:create_app"])
    other = subprocess.Popen([sys.executable, "-c", sleeper, "something else"])
    dead_flow = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                               text=True).stdout.strip()
    try:
        (project / SERVER_RECORD).write_text(json.dumps(
            {"server_pids": [server.pid, other.pid], "flow_pid": int(dead_flow), "host": socket.gethostname()}))
        assert main(["--root", str(project), "--restore-params"]) == 0
        assert server.wait(timeout=20) is not None
        assert other.poll() is None
        assert f"stopped the temporary Prefect server (pid {server.pid}) left running by flow run pid {dead_flow}" \
            in capsys.readouterr().err
        assert not (project / SERVER_RECORD).exists()
    finally:
        for p in (server, other):
            p.kill()
            p.wait()


# --- library errors name the file --------------------------------------------------------------

def test_truncated_artifacts_are_named_not_raw_tracebacks(tmp_path):
    import torch

    from pipeline.artifacts import read_json, read_safetensors, write_json, write_safetensors

    st = tmp_path / "lightgcn.safetensors"
    write_safetensors({"user": torch.ones(3, 2)}, st, {"dataset": "x"})
    tensors, meta = read_safetensors(st)
    assert torch.equal(tensors["user"], torch.ones(3, 2)) and meta == {"dataset": "x"}
    st.write_bytes(st.read_bytes()[:40])
    with pytest.raises(PipelineError, match=r"lightgcn\.safetensors: not a readable safetensors file .*truncated"):
        read_safetensors(st)
    js = tmp_path / "config.json"
    write_json({"dim": 64, "n_users": 3}, js)
    js.write_text(js.read_text()[:20])
    with pytest.raises(PipelineError, match=r"config\.json:\d+:\d+: not valid JSON"):
        read_json(js)
    with pytest.raises(PipelineError, match=r"missing\.json: not found"):
        read_json(tmp_path / "missing.json")
