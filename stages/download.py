"""download: fetch a dataset's raw files (first working route) into data/raw/<dataset>/.

A name with a folder data/local/<name>/ is the user's own data (interactions and items, CSV
or Parquet, canonical schema); any other name must be a known dataset (pipeline/data/sources.py).
"""
from __future__ import annotations

from pathlib import Path

from pipeline import paths
from pipeline.cli import dataset_parser, run
from pipeline.data.download import LocalFile, download
from pipeline.errors import PipelineError
from pipeline.config.params import get, load_params, section
from pipeline.data.sources import Dataset, Route, dataset


def local_dataset(name: str, folder: Path) -> Dataset:
    files = []
    for role in ("interactions", "items"):
        found = [folder / f"{role}{ext}" for ext in (".csv", ".parquet") if (folder / f"{role}{ext}").exists()]
        if len(found) != 1:
            raise PipelineError(f"{folder}: expected one of {role}.csv or {role}.parquet, found {len(found)}")
        files.append(LocalFile(found[0], found[0].name))
    return Dataset(name, (Route("local", "local", tuple(files), note="user-supplied files"),))


def main() -> None:
    args = dataset_parser(__doc__).parse_args()
    cfg = section(load_params(args.params), "download")
    folder = paths.local(args.dataset)
    ds = local_dataset(args.dataset, folder) if folder.is_dir() else dataset(args.dataset)
    download(ds, paths.raw(args.dataset), timeout_s=get(cfg, "timeout_s", (int, float), "download"),
             allow_unpinned=get(cfg, "allow_unpinned", bool, "download"))


if __name__ == "__main__":
    run(main)
