"""The shared checkpoint protocol (pipeline/checkpoint.py): round trip, atomic write, the
run-identity check, pruning."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from pipeline.checkpoint import Checkpointer
from pipeline.errors import PipelineError


def writer(payload: str):
    def write(path: Path) -> None:
        (path / "state.txt").write_text(payload)
    return write


def read_into(out: list):
    return lambda path: out.append((path / "state.txt").read_text())


def test_round_trip(tmp_path):
    c = Checkpointer(tmp_path, "id-a")
    assert c.latest() is None and c.load(read_into([])) is None
    c.save(3, writer("three"), {"history": [{"step": 3, "loss": 0.5}]})
    got: list = []
    found = Checkpointer(tmp_path, "id-a").load(read_into(got))
    assert got == ["three"] and found.step == 3 and found.meta == {"history": [{"step": 3, "loss": 0.5}]}
    assert (tmp_path / "latest").read_text().strip() == found.path.name == "step-00000003"


def test_newer_steps_replace_older_ones(tmp_path):
    c = Checkpointer(tmp_path, "id-a")
    for step in (2, 4, 4, 6):  # a step may be saved twice (a stop on a checkpoint step)
        c.save(step, writer(f"s{step}"))
    got: list = []
    assert c.load(read_into(got)).step == 6 and got == ["s6"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["latest", "step-00000006"]
    kept = Checkpointer(tmp_path / "k", "id-a", keep=2)
    for step in (1, 2, 3):
        kept.save(step, writer(f"s{step}"))
    assert sorted(p.name for p in (tmp_path / "k").iterdir()) == ["latest", "step-00000002", "step-00000003"]


def test_a_failure_mid_save_leaves_the_previous_latest(tmp_path):
    c = Checkpointer(tmp_path, "id-a")
    c.save(2, writer("two"))

    def crash(path: Path) -> None:
        (path / "state.txt").write_text("half")
        raise RuntimeError("killed mid-save")

    with pytest.raises(RuntimeError, match="killed"):
        c.save(4, crash)
    got: list = []
    found = Checkpointer(tmp_path, "id-a").load(read_into(got))
    assert found.step == 2 and got == ["two"]
    assert not (tmp_path / "step-00000004").exists()
    c.save(4, writer("four"))  # the next save clears the debris
    assert Checkpointer(tmp_path, "id-a").load(read_into(got)).step == 4 and got[-1] == "four"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["latest", "step-00000004"]


def test_a_checkpoint_of_other_inputs_is_refused(tmp_path):
    Checkpointer(tmp_path, "a" * 64).save(2, writer("two"))
    before = (tmp_path / "step-00000002" / "state.txt").read_bytes()
    with pytest.raises(PipelineError, match=re.escape(str(tmp_path)) + "(.|\n)*a{64}(.|\n)*b{64}"):
        Checkpointer(tmp_path, "b" * 64).load(read_into([]))
    assert (tmp_path / "step-00000002" / "state.txt").read_bytes() == before
    assert json.loads((tmp_path / "step-00000002" / "checkpoint.json").read_text())["identity"] == "a" * 64


def test_a_dangling_pointer_or_old_layout_is_named(tmp_path):
    (tmp_path / "latest").write_text("step-00000009\n")
    with pytest.raises(PipelineError, match="not a complete checkpoint"):
        Checkpointer(tmp_path, "id").latest()
    (tmp_path / "latest").unlink()
    (tmp_path / "latest").mkdir()
    with pytest.raises(PipelineError, match="layout before"):
        Checkpointer(tmp_path, "id").latest()
