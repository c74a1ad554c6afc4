"""Artifacts know their lineage (issue #14, item 6): every artifact built on the dense ids
records the hash of the id maps (data/kcore/<ds>/{users,items}.parquet) and every consumer
refuses one built on other id maps, naming both files and both hashes, with nothing written.

One tiny project (tests/test_bdlm.py's) is built once through the real producers
(export_embeddings, sft, joint_train); each test copies it, changes one id map the way a
re-run k-core with other settings would (same counts, other users/items behind the ids:
the count checks accept it) and runs one consumer family."""
from __future__ import annotations

import json
import re
import shutil
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from safetensors import safe_open

from pipeline import lineage
from pipeline.errors import PipelineError
from pipeline.llm.sft import SFTConfig
from tests.bdlm_tiny import I, U, make_project


def _stage(monkeypatch, module: str, *args: str) -> None:
    mod = __import__(f"stages.{module}", fromlist=["main"])
    monkeypatch.setattr(sys, "argv", [module, *args])
    mod.main()


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    """The tiny project with an embedding export, an SFT run and a joint run, all recorded."""
    root = tmp_path_factory.mktemp("lineage")
    make_project(root)
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["domain"]["export"] = ["lightgcn"]
    params["llm"] = {"vocab_modes": ["pe"], "variant": {"full": {"vocab": "pe", "aux": False}},
                     "preload_from": "lightgcn", "seed": 7}
    params["sft"] = {**SFTConfig(steps=1, batch_size=2, max_len=64, checkpoint_every=1, warmup_steps=0).section(),
                     "task_weights": {"interaction": 1.0, "topk": 1.0}}
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    mp = pytest.MonkeyPatch()
    mp.chdir(root)
    try:
        for module, *args in (("export_embeddings", "tiny", "lightgcn"), ("sft", "tiny", "full"),
                              ("joint_train", "tiny", "bdlm")):
            _stage(mp, module, *args)
    finally:
        mp.undo()
    return root


@pytest.fixture
def project(built, tmp_path, monkeypatch) -> Path:
    root = tmp_path / "p"
    shutil.copytree(built, root)
    monkeypatch.chdir(root)
    return root


def _retag_items(root: Path) -> tuple[str, str]:
    """items.parquet as a k-core with other settings would write it: the same number of items,
    other raw items behind the dense ids. (old hash, new hash)"""
    f = root / "data/kcore/tiny/items.parquet"
    old = lineage.record("tiny")["items.parquet"]
    pq.write_table(pa.table({"iid": pa.array(range(I), pa.int32()),
                             "item_id": pa.array([f"other-{k}" for k in range(I)])}), f)
    return old, lineage.record("tiny")["items.parquet"]


def test_every_producer_records_the_id_maps_of_its_dataset(project):
    now = lineage.record("tiny")
    with safe_open("data/embeddings/tiny/lightgcn.safetensors", "pt") as f:
        assert json.loads(f.metadata()["id_maps"]) == now
    for path in ("data/llm/tiny/sft/full/variant.json", "data/joint/tiny/bdlm/config.json"):
        assert json.loads(Path(path).read_text())["id_maps"] == now, path
    assert set(now) == {"users.parquet", "items.parquet"} and all(re.fullmatch(r"[0-9a-f]{16}", h) for h in now.values())


def test_pretrain_and_expand_vocab_record_the_id_maps(project, monkeypatch):
    """The two producers the fixture does not run (make_project writes their outputs by hand)."""
    from pipeline.llm.base import save_base
    from tests.llm_tiny import tiny_llama, tiny_tokenizer

    now = lineage.record("tiny")
    _stage(monkeypatch, "pretrain_domain", "tiny", "lightgcn")
    assert json.loads(Path("data/domain/tiny/lightgcn/config.json").read_text())["id_maps"] == now
    tok = tiny_tokenizer()
    save_base(tiny_llama(tok, hidden=16), tok, Path("data/llm/base"), {"kind": "local", "base": "tiny"})
    _stage(monkeypatch, "expand_vocab", "tiny", "pe")
    assert json.loads(Path("data/llm/tiny/vocab/pe/vocab.json").read_text())["id_maps"] == now


@pytest.mark.parametrize("consumer, args, artifact, producer", [
    # a domain checkpoint (evaluate_domain, export_embeddings and joint_train read it through load_trained)
    ("export_embeddings", ("tiny", "lightgcn"), "data/domain/tiny/lightgcn/config.json", "pretrain_domain@tiny-lightgcn"),
    # exported embeddings
    ("expand_vocab", ("tiny", "pe"), "data/embeddings/tiny/lightgcn.safetensors", "export_embeddings@tiny-lightgcn"),
    # the expanded vocabulary
    ("sft", ("tiny", "full"), "data/llm/tiny/vocab/pe/vocab.json", "expand_vocab@tiny-pe"),
    ("joint_train", ("tiny", "bdlm"), "data/llm/tiny/vocab/pe/vocab.json", "expand_vocab@tiny-pe"),
    # SFT and joint outputs
    ("evaluate_llm", ("tiny", "full"), "data/llm/tiny/sft/full/variant.json", "sft@tiny-full"),
    ("evaluate_joint", ("tiny", "bdlm"), "data/joint/tiny/bdlm/config.json", "joint_train@tiny-bdlm"),
])
def test_a_changed_id_map_is_refused_by_every_consumer_and_nothing_is_written(project, monkeypatch, consumer, args,
                                                                               artifact, producer):
    old, new = _retag_items(project)
    assert old != new
    before = _snapshot(project / "data")
    with pytest.raises(PipelineError) as e:
        _stage(monkeypatch, consumer, *args)
    assert str(e.value) == (f"{artifact} was built on id map {old} but data/kcore/tiny/items.parquet now hashes "
                            f"to {new}: re-run `dvc repro {producer}`")
    assert _snapshot(project / "data") == before


def test_the_users_map_is_checked_too(project, monkeypatch):
    f = project / "data/kcore/tiny/users.parquet"
    old = lineage.record("tiny")["users.parquet"]
    pq.write_table(pa.table({"uid": pa.array(range(U), pa.int32()),
                             "user_id": pa.array([f"u{k}" for k in range(U)])}), f)
    with pytest.raises(PipelineError, match=rf"variant.json was built on id map {old} but "
                                            r"data/kcore/tiny/users.parquet now hashes to [0-9a-f]{16}"):
        _stage(monkeypatch, "evaluate_llm", "tiny", "full")


def test_an_artifact_without_a_record_is_refused(project, monkeypatch):
    """One written before lineage was recorded, or by hand: it cannot be checked, so it is not used."""
    cfg = project / "data/llm/tiny/sft/full/variant.json"
    cfg.write_text(json.dumps({k: v for k, v in json.loads(cfg.read_text()).items() if k != "id_maps"}))
    with pytest.raises(PipelineError, match=r"variant.json records no id maps .* re-run `dvc repro sft@tiny-full`"):
        _stage(monkeypatch, "evaluate_llm", "tiny", "full")


def test_unchanged_id_maps_pass_and_the_record_is_handed_on(project):
    assert lineage.check("x", {"id_maps": lineage.record("tiny")}, "tiny", "s") == lineage.record("tiny")
    assert lineage.check("x", lineage.stamp({}, "tiny", text=True), "tiny", "s") == lineage.record("tiny")
    with pytest.raises(PipelineError, match=r"data/kcore/nope/users.parquet: not found .*kcore@nope"):
        lineage.record("nope")
