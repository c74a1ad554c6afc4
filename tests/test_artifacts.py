"""The artifact writer (pipeline/artifacts.py): atomic, and the same content gives the same bytes."""
from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from safetensors import safe_open

from pipeline.artifacts import write_safetensors
from tests.helpers import REPO

WRITE = """
import sys, torch
sys.path.insert(0, {repo!r})
from pipeline.artifacts import write_safetensors
tensors = {{"user": torch.arange(6.).reshape(3, 2), "item": torch.ones(4, 2), "b": torch.tensor([1, 2])}}
meta = {{"model": "mf", "dataset": "ml-100k", "dim": "2", "params_hash": "0123abcd", "projection": "none"}}
write_safetensors(tensors, {path!r}, meta)
"""


def test_safetensors_are_byte_identical_across_processes(tmp_path):
    """safetensors itself writes metadata in a per-process hash order: two processes saving the
    same tensors got different bytes, so DVC saw a change and re-ran everything downstream."""
    files = [tmp_path / f"run{i}.safetensors" for i in range(4)]
    for f in files:
        subprocess.run([sys.executable, "-c", WRITE.format(repo=str(REPO), path=str(f))], check=True)
    assert len({f.read_bytes() for f in files}) == 1
    with safe_open(str(files[0]), "pt") as st:
        assert st.metadata() == {"model": "mf", "dataset": "ml-100k", "dim": "2", "params_hash": "0123abcd",
                                 "projection": "none"}
        assert torch.equal(st.get_tensor("user"), torch.arange(6.).reshape(3, 2))
        assert torch.equal(st.get_tensor("b"), torch.tensor([1, 2]))
        assert set(st.keys()) == {"user", "item", "b"}


def test_a_failed_safetensors_write_leaves_nothing(tmp_path):
    out = tmp_path / "emb.safetensors"
    with pytest.raises(Exception):
        write_safetensors({"user": torch.zeros(2)}, out, {"dim": 2})  # metadata values must be str
    assert list(tmp_path.iterdir()) == []
