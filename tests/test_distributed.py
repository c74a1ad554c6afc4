"""SFT and BDLM joint training through their multi-process paths, on the CPU (marker `slow`:
each test launches processes): DeepSpeed ZeRO-3 from the shipped configs/accelerate_zero3.yaml
on one process (on a CPU, accelerate runs DeepSpeed on one process only), and data parallelism
on two processes (torchrun, gloo), the code path ZeRO-3 takes over several GPUs. The tiny
setups are tests/bdlm_tiny.py's and tests/llm_tiny.py's."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from safetensors.torch import load_file

from pipeline.llm.sft import SFTConfig, batch_indices
from tests.helpers import REPO
from tests.bdlm_tiny import CFG, assert_close, launch, trainer

pytestmark = pytest.mark.slow

SFT_SCRIPT = """
import sys
sys.path.insert(0, {repo!r})
from tests.test_distributed import sft_run
sft_run({out!r})
"""


def sft_run(out: str):
    """A few SFT steps of the tiny LLaMA, saved (gathered under ZeRO-3) to out/model."""
    from pipeline.llm.sft import train
    from tests.llm_tiny import tiny_llama, tiny_tokenizer

    tok = tiny_tokenizer()
    prompts = [f"User {i} has watched movies. Answer:" for i in range(32)]
    answers = ["Yes" if i % 3 else "No" for i in range(32)]
    cfg = SFTConfig(steps=3, batch_size=4, lr=1e-3, warmup_steps=1, max_len=64)
    torch.manual_seed(0)
    return train(tiny_llama(tok, hidden=16), tok, prompts, answers, cfg, output_dir=Path(out) / "model")[1]


def zero3_config(tmp_path: Path) -> list[str]:
    """`accelerate launch` with the shipped config, on this CPU."""
    config = yaml.safe_load((REPO / "configs/accelerate_zero3.yaml").read_text())
    config.update(use_cpu=True, num_processes=1)
    (tmp_path / "accelerate.yaml").write_text(yaml.safe_dump(config))
    return [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(tmp_path / "accelerate.yaml")]


def assert_same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_sft_under_zero3_from_the_shipped_config_matches_one_process(tmp_path):
    launch(zero3_config(tmp_path), tmp_path, {}, SFT_SCRIPT)
    ref = tmp_path / "ref"
    sft_run(str(ref))
    # the weights gathered from ZeRO-3 and saved are those of the same steps on one process
    assert_close(load_file(tmp_path / "model/model.safetensors"), load_file(ref / "model/model.safetensors"))


def test_joint_training_under_zero3_from_the_shipped_config_matches_one_process(tmp_path):
    [run] = launch(zero3_config(tmp_path), tmp_path, {})
    assert run["distributed_type"] == "DistributedType.DEEPSPEED"
    ref = trainer()
    ref.run()
    # same batches, same losses, up to the rounding of DeepSpeed's flat fp32 partitions
    for got, want in zip(run["history"], ref.history, strict=True):
        assert got.keys() == want.keys()
        np.testing.assert_allclose([got[k] for k in sorted(got)], [want[k] for k in sorted(want)],
                                   rtol=1e-4, atol=1e-6)
    # DeepSpeed clips gradients at 1.0 unless told not to: ds_zero3.json does, so both paths take
    # the same steps (with its default the weights here differ by up to 4e-5)
    for part, want in (("llm", ref.model), ("drs", ref.drs), ("m", ref.m)):
        assert_close(run["whole"][part], want.state_dict())
    # kill and resume under ZeRO-3: bitwise the uninterrupted run
    assert run["resumed_history"] == run["history"]
    for part in ("llm", "drs", "m"):
        assert_same(run["resumed"][part], run["whole"][part])


def test_two_processes_share_the_step_and_stay_identical(tmp_path):
    runs = launch([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2"], tmp_path,
                  {"ACCELERATE_USE_CPU": "true"})
    assert [r["rank"] for r in runs] == [0, 1] and all(r["world"] == 2 for r in runs)
    a, b = runs
    # the DRS, M and the LLM are the same on both processes, and so is the resumed run
    for part in ("llm", "drs", "m"):
        assert_same(a["whole"][part], b["whole"][part])
        assert_same(a["resumed"][part], a["whole"][part])
    assert a["resumed_history"] == a["history"]
    # each LLM step wrote the rows of both processes' prompts into M, not only its own
    data = trainer().data
    batches = SFTConfig(batch_size=CFG.batch_size, grad_accum=1, seed=CFG.seed)
    for step in range(CFG.steps):
        whole = sum((batch_indices(len(data.llm_enc.input_ids), batches, step, 0, r, 2) for r in range(2)), [])
        want = {"user": len(np.unique(data.users[whole])), "item": len(np.unique(data.items[whole]))}
        got = {name: n for s, side, name, n in a["writes"] if s == step and side == "llm"}
        assert got == want, step
    # and the run differs from one process's (twice the prompts per step): it really split them
    one = trainer()
    one.run()
    assert a["history"][-1]["llm_loss"] != one.history[-1]["llm_loss"]


def test_stages_under_two_processes_write_their_outputs_once_and_whole(tmp_path):
    """sft and joint_train run by torchrun: each process trains, the main one alone writes (a
    second writer would race the first to the output folder with a folder holding no model)."""
    from tests.bdlm_tiny import make_project

    make_project(tmp_path)
    params = yaml.safe_load((tmp_path / "params.yaml").read_text())
    params["llm"] = {"vocab_modes": ["pe"], "variant": {"full": {"vocab": "pe", "aux": False}}}
    params["sft"] = {**SFTConfig(steps=2, batch_size=2, max_len=64, checkpoint_every=1, warmup_steps=1).section(),
                     "task_weights": {"interaction": 1.0, "topk": 1.0}}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "ACCELERATE_USE_CPU": "true", "PYTHONPATH": str(REPO)}
    for args in (["stages.sft", "tiny", "full"], ["stages.joint_train", "tiny", "bdlm"]):
        res = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "-m", *args],
                             cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
        assert res.returncode == 0, res.stderr[res.stderr.find("Traceback"):][:6000]
    sft_out, joint_out = tmp_path / "data/llm/tiny/sft/full", tmp_path / "data/joint/tiny/bdlm"
    assert {"model.safetensors", "variant.json", "config.json"} <= {p.name for p in sft_out.iterdir()}
    assert {"llm", "drs.safetensors", "sharing.safetensors", "config.json"} == {p.name for p in joint_out.iterdir()}
    assert (joint_out / "llm/model.safetensors").exists()
    leftovers = [p.name for d in (sft_out.parent, joint_out.parent) for p in d.iterdir() if p.name.startswith(".")]
    assert leftovers == []
    history = json.loads((tmp_path / "data/metrics/sft/tiny/full.json").read_text())["history"]
    assert len(history) == 2


NAN_SCRIPT = """
import os, sys
sys.path.insert(0, {repo!r})
from pathlib import Path
import torch
import pipeline.llm.sft as sft
from pipeline.errors import PipelineError
from tests.llm_tiny import tiny_llama, tiny_tokenizer
rank, calls, answer_loss = int(os.environ["RANK"]), [], sft.answer_loss
def loss(model, batch):  # process 1's second step (and only it) goes NaN
    calls.append(1)
    out = answer_loss(model, batch)
    return out * float("nan") if rank == 1 and len(calls) == 2 else out
sft.answer_loss = loss
tok = tiny_tokenizer()
prompts = [f"User {{i}} has watched movies. Answer:" for i in range(32)]
answers = ["Yes" if i % 3 else "No" for i in range(32)]
torch.manual_seed(0)
try:
    sft.train(tiny_llama(tok, hidden=16), tok, prompts, answers,
              sft.SFTConfig(steps=4, batch_size=2, lr=1e-3, warmup_steps=0, max_len=64),
              output_dir=Path({out!r}) / "model")
except PipelineError as e:
    Path({out!r}, f"rank{{rank}}.err").write_text(str(e))
    sys.exit(2)
Path({out!r}, f"rank{{rank}}.done").write_text("")
"""


def test_a_nan_loss_on_one_process_stops_every_process_with_the_error(tmp_path):
    """Under data parallelism the finiteness check is collective: a NaN on process 1 alone stops
    both at the same step with the same error (a raise on process 1 alone left process 0
    waiting for it in the next gradient all-reduce), and no model is written."""
    script = tmp_path / "nan.py"
    script.write_text(NAN_SCRIPT.format(repo=str(REPO), out=str(tmp_path)))
    res = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", str(script)],
                         cwd=REPO, capture_output=True, text=True, timeout=180,
                         env={**os.environ, "OMP_NUM_THREADS": "1", "ACCELERATE_USE_CPU": "true"})
    assert res.returncode != 0
    errors = {r: (tmp_path / f"rank{r}.err").read_text() for r in range(2) if (tmp_path / f"rank{r}.err").exists()}
    assert sorted(errors) == [0, 1], res.stderr[-3000:]
    for r, message in errors.items():
        assert message.startswith("sft: training loss is not finite on process 1 of 2 "
                                  f"(this is process {r}: ["), message
        assert "at step 2 of 4" in message and "stopped on every process, nothing was written" in message
    assert "[nan]" in errors[1] and "[nan]" not in errors[0]
    assert not list(tmp_path.glob("rank*.done")) and not (tmp_path / "model").exists()
