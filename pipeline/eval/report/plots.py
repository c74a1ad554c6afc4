"""The flat rows that dvc.yaml's top-level `plots` draw: the ablation bars, the λ curves, the SFT
loss curves and the SFT learning curves, in wide form (one row per x, one field per series, null
where a series has no point: `dvc plots` needs every y field present)."""
from __future__ import annotations

from pipeline.eval.report.inputs import Inputs


def lambda_plot(curve: list[dict]) -> list[dict]:
    """The curve in wide form for `dvc plots` (one row per lambda, one field per side)."""
    wide: dict[float, dict] = {}
    for p in curve:
        row = wide.setdefault(p["lambda"], {"lambda": p["lambda"]})
        row[f"HR@1 {p['side']}"], row[f"f1 {p['side']}"] = p["HR@1"], p["f1"]
    return [wide[k] for k in sorted(wide)]


def sft_loss_plot(inp: Inputs, variants: list[str]) -> list[dict]:
    """SFT loss curves in wide form: one row per step, one field per variant (null where a
    variant has no such step or no curve yet: `dvc plots` needs every y field present)."""
    names = list(dict.fromkeys([*variants, *(n for k, n in inp.files if k == "sft")]))
    steps: dict[int, dict] = {}
    for v in names:
        for h in (inp.get("sft", v) or {}).get("history", []):
            if "step" in h:
                steps.setdefault(h["step"], {"step": h["step"], **{n: None for n in names}})[v] = h.get("loss")
    return [steps[k] for k in sorted(steps)]


def learning_curve_plot(inp: Inputs, variants: list[str]) -> list[dict]:
    """SFT learning curves in wide form: one row per number of training samples seen, one field
    per variant (its valid top-K HR@1 on the evaluated users; null where it has no point)."""
    names = list(dict.fromkeys([*variants, *(n for k, n in inp.files if k == "sft")]))
    rows: dict[int, dict] = {}
    for v in names:
        for p in (inp.get("sft", v) or {}).get("curve", []):
            rows.setdefault(p["samples"], {"samples": p["samples"], **{n: None for n in names}})[v] = p.get(
                "valid_topk_HR@1")
    return [rows[k] for k in sorted(rows)]


def ablation_plot(abl: dict) -> list[dict]:
    return [{"variant": r["model"], "HR@1": r["HR@1"], "f1": r["f1"]} for r in abl["rows"]
            if r["present"] and r["kind"] != "floors"]
