"""expand_vocab: data/llm/base + one dataset's users/items -> data/llm/<ds>/vocab/<mode>/.

Modes (llm.vocab_modes): `pe` adds <uid_k>/<iid_k> tokens pre-loaded from the domain model
`llm.preload_from` (its exported tables, data/embeddings/<ds>/<model>.safetensors), `rand`
the same tokens randomly initialised ("w/o PE"), `text` no new tokens ("w/o ET"). The output
is a float32 save_pretrained model + tokenizer that plain Auto*.from_pretrained loads, plus
`vocab.json` (pipeline.llm.vocab.expand_vocab's info: token ids, projection, norms).
"""
from __future__ import annotations

import logging
import time

import pyarrow.parquet as pq
import torch

from pipeline import lineage, paths
from pipeline.artifacts import atomic_dir, read_json, read_safetensors, write_json
from pipeline.cli import dataset_parser, run
from pipeline.errors import PipelineError
from pipeline.llm.base import load_base, readable
from pipeline.llm.tokens import new_tokens
from pipeline.llm.vocab import MODES, check_single_tokens, expand_vocab
from pipeline.config.params import get, load_params, section

log = logging.getLogger(__name__)


def _count(path) -> int:
    if not path.exists():
        raise PipelineError(f"{path}: not found (run the kcore stage first)")
    return pq.read_metadata(path).num_rows


def load_tables(ds: str, model_name: str, export: list[str]) -> tuple[dict[str, torch.Tensor], str]:
    path = paths.embeddings(ds, model_name)
    if model_name not in export:
        raise PipelineError(f"params.yaml: llm.preload_from '{model_name}' is not in domain.export "
                            f"{export}: add it there so export_embeddings writes {path}")
    if not path.exists():
        raise PipelineError(f"{path}: not found (run `dvc repro export_embeddings@{ds}-{model_name}`)")
    tables, meta = read_safetensors(path)
    if meta.get("dataset", ds) != ds:
        raise PipelineError(f"{path}: exported for dataset '{meta['dataset']}', not '{ds}'")
    lineage.check(path, meta, ds, f"export_embeddings@{ds}-{model_name}")
    return tables, str(path)


def main() -> None:
    p = dataset_parser(__doc__)
    p.add_argument("mode", choices=MODES)
    args = p.parse_args()
    params = load_params(args.params)
    llm = section(params, "llm")
    seed = get(llm, "seed", int, "llm")
    ds, mode = args.dataset, args.mode
    n_users = _count(paths.kcore(ds) / "users.parquet")
    n_items = _count(paths.kcore(ds) / "items.parquet")
    tables, source, preload = None, None, None
    if mode == "pe":
        preload = get(llm, "preload_from", str, "llm")
        export = get(section(params, "domain"), "export", list, "domain")
        tables, source = load_tables(ds, preload, export)
    base = paths.base_llm()
    if not (base / "config.json").exists():
        raise PipelineError(f"{base}: no base model (run `dvc repro download_llm`)")
    t0 = time.perf_counter()
    model, tokenizer = load_base(base)
    info = expand_vocab(model, tokenizer, n_users, n_items, mode, tables, seed=seed,
                        tables_source=source or "")
    info.update({"dataset": ds, "base": read_json(base / "source.json").get("base"),
                 "preload_from": preload, "embeddings": source, lineage.KEY: lineage.record(ds)})
    model = model.float()
    rows = model.get_input_embeddings().weight
    if not bool(torch.isfinite(rows).all()):  # never write a model (and a vocab.json) holding NaN
        raise PipelineError(f"expand_vocab {ds}/{mode}: the expanded embedding table has non-finite rows "
                            f"(first {int((~torch.isfinite(rows).all(dim=1)).nonzero()[0, 0])}); nothing written")
    out = paths.vocab_llm(ds, mode)
    with atomic_dir(out) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        if mode != "text":  # the tokens must still be single tokens after a reload
            from transformers import AutoTokenizer

            check_single_tokens(AutoTokenizer.from_pretrained(tmp), new_tokens(n_users, n_items))
        write_json(info, tmp / "vocab.json")
        readable(tmp)
    log.info(f"[expand_vocab] {out}: mode {mode}, {info['n_new_tokens']} new tokens, "
          f"projection {info['projection']}, norms {info.get('norms')} "
          f"({time.perf_counter() - t0:.1f}s)")


if __name__ == "__main__":
    run(main)
