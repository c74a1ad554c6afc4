"""The mutual-learning weight sweep: one point per λ and side (HR@1, f1, their intervals), from
the lambda_<value> joint experiments and the default run's bdlm and wo_jl, with each run's last
logged mutual-learning loss, row drift and LLM-DRS gap."""
from __future__ import annotations

import re

from pipeline import paths
from pipeline.errors import PipelineError
from pipeline.eval.report.inputs import Inputs


def _lambda_of(name: str, obj: dict) -> float | None:
    if obj.get("lambda") is not None:
        return float(obj["lambda"])
    m = re.fullmatch(r"lambda_(.+)", name)
    if m:
        try:
            return float(m.group(1).replace("p", "."))
        except ValueError:
            return None
    return None


def lambda_curve(inp: Inputs) -> list[dict]:
    """[{lambda, side, HR@1, f1, ci, users_scored, experiment}] from the lambda_<v> experiments (and
    `bdlm` and `wo_jl` where their lambda is not already in the sweep), sorted by lambda then side."""
    points: dict[float, tuple[str, dict]] = {}
    for (kind, name), obj in inp.files.items():
        if kind == "joint" and name.startswith("lambda_"):
            lam = _lambda_of(name, obj)
            if lam is None:
                raise PipelineError(f"{paths.metrics_joint(inp.dataset, name).as_posix()}: no 'lambda' and none in its name")
            points[lam] = (name, obj)
    for name in ("bdlm", "wo_jl"):  # the default run's two experiments are sweep points too
        obj = inp.get("joint", name)
        if obj is not None and (lam := _lambda_of(name, obj)) is not None and lam not in points:
            points[lam] = (name, obj)
    out = []
    for lam in sorted(points):
        name, obj = points[lam]
        trained = training_record(inp, name)
        for side in ("llm", "drs"):
            blk = obj[side]
            ci = blk.get("ci", {})
            out.append({"lambda": lam, "side": side, "HR@1": blk.get("topk", {}).get("HR@1"),
                        "f1": blk.get("binary", {}).get("f1"),
                        "ci": {"HR@1": ci.get("topk/HR@1"), "f1": ci.get("binary/f1")},
                        "users_scored": blk.get("users_scored", obj.get("users_scored")), "experiment": name,
                        "L_ml": trained.get(f"{side}_ml"), "drift": trained.get(f"drift_{side}_user"),
                        "gap": trained.get("gap_user")})
    return out


def training_record(inp: Inputs, experiment: str) -> dict:
    """The last logged values of a joint run that carry L_ml, row drift and the LLM-DRS gap
    (data/metrics/joint_train/<ds>/<experiment>.json); {} when absent."""
    out: dict = {}
    for h in (inp.get("joint_train", experiment) or {}).get("history", []):
        out.update({k: v for k, v in h.items() if k.endswith("_ml") or k.startswith(("drift_", "gap_"))})
    return out
