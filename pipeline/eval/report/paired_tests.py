"""Paired tests: two rows compared on the users both are scored on, from their per-user outcomes
(McNemar on HR@k hits, paired bootstrap otherwise), Holm-adjusted per family; a domain model or
floor is restricted to the LLM user subset so that it is compared on the LLM rows' users."""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from pipeline.errors import PipelineError
from pipeline.eval.report.inputs import Inputs, is_number_or_none
from pipeline.eval.report.refs import (ABLATION, LLM_ONLY, MOSTPOP, RANDOM, T3_BASELINES, T3_BDLM, T4_BASELINES,
                                       T4_BDLM, Ref, scored_refs, with_floors)

# A difference is called significant only when its Holm-adjusted p is under ALPHA.
ALPHA = 0.05
# The families Holm adjusts within, and their headings in the report.
FAMILIES = {"table3": "Table 3: BDLM vs the baselines", "ablation": "Ablation steps",
            "lambda": "λ sweep: each λ vs λ = 0", "vs_mostpop": "Every row vs MostPop",
            "vs_random": "Every row vs Random"}


@dataclass(frozen=True)
class Comparison:
    """One paired test to run: row a against row b on one protocol's metric, within a family."""
    family: str
    a: Ref
    b: Ref
    protocol: str = "topk"
    metric: str = "HR@1"
    note: str | None = None


def _best_baseline(t3: dict) -> Ref | None:
    """The Table 3 baseline (floors excluded) with the highest top-K HR@1."""
    by_label = {r.label: r for r in T3_BASELINES}
    rows = [r for r in t3["rows"] if r["model"] in by_label and r["present"] and r["HR@1"] is not None]
    return by_label[max(rows, key=lambda r: r["HR@1"])["model"]] if rows else None


def comparisons(inp: Inputs, t3: dict, curve: list[dict]) -> tuple[list[Comparison], list[str]]:
    """Every comparison of the report's families, and notes on families that cannot be formed."""
    notes = []
    bdlm_llm, bdlm_drs = T3_BDLM
    lgcn = next(r for r in T3_BASELINES if r.name == "lightgcn")
    out = [Comparison("table3", bdlm_llm, b) for b in T3_BASELINES]
    out.append(Comparison("table3", bdlm_drs, lgcn))
    best = _best_baseline(t3)
    if best is not None and best != lgcn:
        out.append(Comparison("table3", bdlm_drs, best, note="BDLM-llm's best baseline"))
    ab = {r.label: r for r in ABLATION}
    out += [Comparison("ablation", ab[f"{x} ({side})"], ab[f"{y} ({side})"]) for side in ("llm", "drs")
            for x, y in (("BDLM", "w/o JL"), ("w/o JL", "w/o PE"), ("w/o JL", "w/o ET"), ("w/o PE", "w/o ET"))]
    out += [Comparison("ablation", LLM_ONLY, ab[x]) for x in ("w/o aux (SFT)", "w/o PE (SFT)")]
    out.append(Comparison("ablation", ab["+ align loss (SFT, an option)"], LLM_ONLY))
    zero = next((p["experiment"] for p in curve if p["lambda"] == 0), None)
    if zero is None:
        notes.append("λ sweep: no λ = 0 point (`wo_jl` or `lambda_0`) to compare with" if curve
                     else "λ sweep: no sweep points yet")
    else:
        for p in curve:
            if p["lambda"] != 0:
                out.append(Comparison("lambda", Ref(f"λ={p['lambda']:g} ({p['side']})", "joint", p["experiment"],
                                                    p["side"]),
                                      Ref(f"λ=0 ({p['side']})", "joint", zero, p["side"])))
    seen, rows = set(), []
    for r in with_floors(T3_BASELINES) + T3_BDLM + ABLATION + T4_BASELINES + T4_BDLM + scored_refs(inp):
        if r.key not in seen and inp.get(r.kind, r.name) is not None:
            seen.add(r.key)
            rows.append(r)
    for family, ref in (("vs_mostpop", MOSTPOP), ("vs_random", RANDOM)):
        out += [Comparison(family, r, ref) for r in rows if r.key != ref.key]
    return out, notes


def _uids(t, protocol: str) -> np.ndarray:
    from pipeline.eval import metrics

    return metrics.outcome_users(t, protocol)


def per_user(t, protocol: str, metric: str, users: np.ndarray) -> np.ndarray:
    """Per-user outcome of `metric` (HR@k / Recall@k: 0/1 hits; NDCG@k: real) for `users`, in order."""
    from pipeline.eval import metrics

    try:
        return metrics.per_user_metric(t, protocol, metric, users)
    except ValueError as e:
        raise PipelineError(f"paired tests: {e}") from None


def llm_subset(inp: Inputs, protocol: str) -> np.ndarray | None:
    """The LLM user subset: the uids of the first LLM/joint row with outcomes (every LLM row is
    scored on the same seeded subset, evaluate_llm.max_users / seed); None when there is none."""
    for r in [*T3_BDLM, *ABLATION, *(x for x in scored_refs(inp) if x.kind in ("llm", "joint"))]:
        t = inp.outcomes(r)
        if t is not None and len(u := _uids(t, protocol)):
            return u
    return None


def _confidence(inp: Inputs) -> float:
    return next((float(o["confidence"]) for o in inp.files.values() if is_number_or_none(o.get("confidence"))
                 and o.get("confidence") is not None), 0.95)


def _finite(v):
    return None if v is None or (isinstance(v, float) and not math.isfinite(v)) else v


def paired_tests(inp: Inputs, t3: dict, curve: list[dict]) -> dict:
    """{"families": {family: [test]}, "skipped": [...], "notes": [...]}; each test names its two
    rows, the users (n, and which subset), diff = a - b with its interval, p, Holm's p within the
    family, and a verdict: "significant" only when Holm's p < .05."""
    from pipeline.eval import stats

    conf = _confidence(inp)
    comps, notes = comparisons(inp, t3, curve)
    families: dict[str, list[dict]] = {f: [] for f in FAMILIES}
    skipped = []
    subsets: dict[str, np.ndarray | None] = {}  # the LLM user subset per protocol, found once
    for c in comps:
        ta, tb = inp.outcomes(c.a), inp.outcomes(c.b)
        base = {"family": c.family, "a": c.a.label, "b": c.b.label, "protocol": c.protocol, "metric": c.metric,
                "a_outcomes": c.a.outcome_path(inp.dataset), "b_outcomes": c.b.outcome_path(inp.dataset)}
        if c.note:
            base["note"] = c.note
        missing = [r.outcome_path(inp.dataset) for r, t in ((c.a, ta), (c.b, tb)) if t is None]
        if missing:
            skipped.append({**base, "missing": missing, "reason": "outcome file missing"})
            continue
        users = np.intersect1d(_uids(ta, c.protocol), _uids(tb, c.protocol))
        scope = "users both rows are scored on"
        if {c.a.kind, c.b.kind} & {"domain", "floors"}:
            if c.protocol not in subsets:
                subsets[c.protocol] = llm_subset(inp, c.protocol)
            sub = subsets[c.protocol]
            if sub is None:
                scope = "every test user both rows are scored on (no LLM outcomes to take the LLM subset from)"
            else:
                users, scope = np.intersect1d(users, sub), "the LLM user subset"
        if not len(users):
            skipped.append({**base, "missing": [], "reason": f"no users in common on {c.protocol}"})
            continue
        t = stats.paired_test(per_user(ta, c.protocol, c.metric, users), per_user(tb, c.protocol, c.metric, users),
                              conf, names=(c.a.label, c.b.label))
        families[c.family].append({**base, "users": scope, "n": t.n, "diff": _finite(t.diff), "low": _finite(t.low),
                                   "high": _finite(t.high), "p": _finite(t.p_value), "method": t.method})
    for tests in families.values():
        adjusted = stats.holm([np.nan if x["p"] is None else x["p"] for x in tests])
        for x, p in zip(tests, adjusted):
            x["p_holm"] = _finite(p)
            x["significant"] = x["p_holm"] is not None and x["p_holm"] < ALPHA
            x["verdict"] = (f"significant ({x['a']} {'above' if x['diff'] > 0 else 'below'} {x['b']})"
                            if x["significant"] else f"not distinguishable from noise at n={x['n']}")
    return {"confidence": conf, "alpha": ALPHA, "families": families, "skipped": skipped, "notes": notes}
