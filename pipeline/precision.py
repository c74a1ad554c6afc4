"""Mixed precision for the LLM: one setting for fine-tuning, joint training and scoring.

`no` computes in float32; `bf16` autocasts the matmuls to bfloat16 (weights, optimizer
state and losses stay float32); `auto` picks `bf16` where the device computes bfloat16
natively -- a CUDA GPU that supports it, or a CPU with AVX512-BF16 or AMX (there, measured
on 2 cores of an EPYC with AVX512-BF16, an SmolLM2-135M training step is about 1.8x and a
scoring pass about 2x faster than float32) -- and `no` elsewhere, where bfloat16 would be
emulated and slower. What `auto` resolved to is written into each stage's metrics: numbers
from a bf16 run and a float32 run of the same params differ in the last digits.
"""
from __future__ import annotations

import contextlib

import torch

from pipeline.errors import PipelineError

PRECISIONS = ("auto", "no", "bf16")


def native_bf16(device: str | torch.device) -> bool:
    """Whether `device` computes bfloat16 matmuls in hardware."""
    kind = torch.device(device).type
    if kind == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if kind == "cpu":
        return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
    return False


def resolve(precision: str, device: str | torch.device, where: str = "mixed_precision") -> str:
    """'no' or 'bf16' for `device`; `where` names the param in the error."""
    if precision not in PRECISIONS:
        raise PipelineError(f"params.yaml: {where} must be one of {list(PRECISIONS)}, got {precision!r}")
    if precision == "auto":
        return "bf16" if native_bf16(device) else "no"
    return precision


def autocast(precision: str, device: str | torch.device):
    """A context that computes in `precision` ('no' or 'bf16', as resolve gives) on `device`."""
    if precision == "no":
        return contextlib.nullcontext()
    return torch.autocast(torch.device(device).type, dtype=torch.bfloat16)
