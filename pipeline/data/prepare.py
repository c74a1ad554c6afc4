"""raw files -> canonical interactions + items, checked against the release's published counts."""
from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from pipeline.errors import PipelineError
from pipeline.data.readers import read_raw


def counts(inter: pa.Table) -> dict[str, int]:
    return {"interactions": inter.num_rows,
            "users": len(pc.unique(inter["user_id"])),
            "items": len(pc.unique(inter["item_id"]))}


def verify_files(raw_dir: Path, manifest: dict) -> None:
    """Every file the download stage recorded still has its sha256 and size: a copy cut short
    or edited since (an interrupted sync, a hand edit) is refused, naming the file."""
    from pipeline.artifacts import file_digest

    for name, rec in (manifest.get("files") or {}).items():
        path = Path(raw_dir) / name
        if not path.exists():
            raise PipelineError(f"{path}: missing, but {raw_dir}/checksums.json records it; re-run the download stage")
        digest, size = file_digest(path)
        if (digest, size) != (rec.get("sha256"), rec.get("size")):
            what = "truncated" if size < (rec.get("size") or 0) else "changed"
            raise PipelineError(f"{path}: {what} since download ({size:,} bytes, sha256 {digest[:12]}...; "
                                f"{raw_dir}/checksums.json records {rec.get('size'):,} bytes, "
                                f"{str(rec.get('sha256'))[:12]}...); re-run the download stage")


def prepare(raw_dir: Path, manifest: dict) -> tuple[pa.Table, pa.Table, dict]:
    verify_files(raw_dir, manifest)
    inter, items = read_raw(manifest["format"], raw_dir)
    if inter.num_rows == 0:
        raise PipelineError(f"{raw_dir}: no interactions read")
    if len(pc.unique(items["item_id"])) != items.num_rows:
        raise PipelineError(f"{raw_dir}: item ids are not unique in the items file")
    got = counts(inter)
    expected = manifest.get("expected") or {}
    wrong = {k: (got[k], v) for k, v in expected.items() if got[k] != v}
    if wrong:
        detail = ", ".join(f"{k} {g:,} (published {v:,})" for k, (g, v) in wrong.items())
        raise PipelineError(f"{raw_dir}: route '{manifest['route']}' disagrees with the release: {detail}")
    # Items that are interacted with but absent from the items file get empty text.
    known = pc.is_in(pc.unique(inter["item_id"]), value_set=items["item_id"])
    missing = pc.filter(pc.unique(inter["item_id"]), pc.invert(known))
    if len(missing):
        empty = pa.array([""] * len(missing), pa.string())
        items = pa.concat_tables([items, pa.table([missing.cast(pa.string()), empty, empty, empty],
                                                 schema=items.schema)])
    report = {**got, "items_in_catalogue": items.num_rows, "items_without_metadata": len(missing),
              "items_with_title": int(pc.sum(pc.greater(pc.utf8_length(items["title"]), 0)).as_py() or 0),
              "route": manifest["route"], "format": manifest["format"]}
    return inter, items, report
