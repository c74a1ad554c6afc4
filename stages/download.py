"""download: fetch a dataset's raw files (first working route) into data/raw/<dataset>/."""
from __future__ import annotations

from pathlib import Path

from pipeline import paths
from pipeline.cli import dataset_parser, run
from pipeline.download import LocalFile, download
from pipeline.errors import PipelineError
from pipeline.params import get, load_params, section
from pipeline.sources import Dataset, Route, dataset


def local_dataset(name: str, spec: dict) -> Dataset:
    files = []
    for role in ("interactions", "items"):
        if not isinstance(spec.get(role), str):
            raise PipelineError(f"params.yaml: local_datasets.{name}.{role} must be a file path")
        path = Path(spec[role])
        if path.suffix not in (".csv", ".parquet"):
            raise PipelineError(f"params.yaml: local_datasets.{name}.{role}: {path} must be .csv or .parquet")
        files.append(LocalFile(path, f"{role}{path.suffix}"))
    return Dataset(name, (Route("local", "local", tuple(files), note="user-supplied files"),))


def main() -> None:
    args = dataset_parser(__doc__).parse_args()
    params = load_params(args.params)
    cfg = section(params, "download")
    local = params.get("local_datasets") or {}
    ds = local_dataset(args.dataset, local[args.dataset]) if args.dataset in local else dataset(args.dataset)
    download(ds, paths.raw(args.dataset), timeout_s=get(cfg, "timeout_s", (int, float), "download"),
             allow_unpinned=get(cfg, "allow_unpinned", bool, "download"))


if __name__ == "__main__":
    run(main)
