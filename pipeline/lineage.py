"""Artifacts know their lineage: the id maps they were built on (issue #14, item 6).

Row k of every domain model, exported embedding table and <uid_k>/<iid_k> token is the user or
item that data/kcore/<ds>/users.parquet / items.parquet map to dense id k. A k-core rebuilt
with other settings or data can have the same counts and different people behind the ids;
count checks accept it and every result is silently wrong. So each artifact built on the ids
records the content hash of both id maps (`record`, under the key "id_maps") and each consumer
checks it against the id maps of today (`check`), naming both files and both hashes.
Producers: pretrain_domain (config.json), export_embeddings (safetensors metadata),
expand_vocab (vocab.json), sft (variant.json), joint_train (config.json).
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from pipeline import paths
from pipeline.artifacts import file_digest
from pipeline.errors import PipelineError

KEY = "id_maps"
MAPS = ("users.parquet", "items.parquet")
_CHARS = 16  # hex digits of sha256 kept: collisions are not the threat, a stale artifact is


def record(ds: str, folder: str | os.PathLike | None = None) -> dict[str, str]:
    """{"users.parquet": hash, "items.parquet": hash} of dataset `ds`'s id maps as they are now
    (`folder`: another k-core folder, for tests)."""
    folder = Path(folder) if folder is not None else paths.kcore(ds)
    out = {}
    for name in MAPS:
        f = folder / name
        if not f.is_file():
            raise PipelineError(f"{f}: not found (run `dvc repro kcore@{ds}` first)")
        out[name] = file_digest(f)[0][:_CHARS]
    return out


def stamp(meta: dict, ds: str, text: bool = False) -> dict:
    """`meta` plus the id-map record of `ds`; `text`: as a JSON string (safetensors metadata
    holds strings only)."""
    rec = record(ds)
    return {**meta, KEY: json.dumps(rec, sort_keys=True) if text else rec}


def check(artifact: str | os.PathLike, meta: dict, ds: str, stage: str) -> dict[str, str]:
    """The id-map record of `artifact` (its config or metadata `meta`) if it matches dataset
    `ds`'s id maps of today, else a PipelineError naming the artifact, the id map, both hashes
    and `stage`, the `dvc repro` target that rebuilds the artifact. Returns the record, for an
    artifact built from this one to carry on."""
    now = record(ds)
    got = meta.get(KEY) if isinstance(meta, dict) else None
    if isinstance(got, str):
        try:
            got = json.loads(got)
        except json.JSONDecodeError:
            got = None
    if not isinstance(got, dict):
        raise PipelineError(f"{artifact} records no id maps (built before lineage was recorded, or not by this "
                            f"pipeline), so it cannot be checked against {paths.kcore(ds)}/{MAPS[0]} and "
                            f"{MAPS[1]}: re-run `dvc repro {stage}`")
    for name in MAPS:
        if got.get(name) != now[name]:
            raise PipelineError(f"{artifact} was built on id map {got.get(name)} but {paths.kcore(ds) / name} now "
                                f"hashes to {now[name]}: re-run `dvc repro {stage}`")
    return now
