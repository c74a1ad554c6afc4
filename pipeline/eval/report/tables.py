"""The paper-style tables of the report: BDLM Table 3, the ablations, Table 4 and Cao et al.'s
protocols. Each row is read from its metrics file (domain models and floors on the LLM user
subset where they have it), with its interval, its user count and the constant-"Yes" F1 floor;
Tables 3 and 4 carry the relative improvement of BDLM over the best baseline."""
from __future__ import annotations

from pipeline.eval.report.inputs import Inputs
from pipeline.eval.report.refs import (ABLATION, FLOOR_ROWS, MOSTPOP, T3_BASELINES, T3_BDLM, T4_BASELINES,
                                       T4_BDLM, Ref, scored_refs, with_floors)

# BDLM Table 3's columns: (protocol, key in our metrics, column name in the paper). AUC and
# accuracy sit beside prec/rec/f1: a threshold-free and a plain view of interaction prediction.
T3_COLUMNS = [("topk", "HR@1", "HR@1"), ("topk", "HR@2", "HR@2"), ("binary", "precision", "prec"),
              ("binary", "recall", "rec"), ("binary", "f1", "f1"), ("binary", "auc", "AUC"),
              ("binary", "accuracy", "acc")]
# Cao et al.'s protocols.
CAO_COLUMNS = [("retrieval", "Recall@5"), ("retrieval", "NDCG@5"), ("retrieval", "Recall@10"), ("retrieval", "NDCG@10"),
               ("ranking", "NDCG@5"), ("ranking", "NDCG@10"), ("ranking", "HR@1"), ("ranking", "HR@5"),
               ("ranking", "HR@10"), ("rating", "RMSE"), ("rating", "MAE")]


def resolve(inp: Inputs, ref: Ref) -> tuple[dict | None, int | None]:
    """(metrics block, users scored) for a row, or (None, None) when its file is absent."""
    obj = inp.get(ref.kind, ref.name)
    if obj is None:
        return None, None
    if ref.kind in ("domain", "floors"):
        sub = obj.get("llm_users")  # scored on the LLM rows' users: every row compares alike
        return (sub, sub.get("users_scored")) if sub is not None else (obj, obj.get("users_scored", inp.domain_users))
    if ref.kind == "joint":
        block = obj[ref.side]
        return block, block.get("users_scored", obj.get("users_scored"))
    return obj, obj.get("users_scored")


def metric_row(inp: Inputs, ref: Ref, columns=T3_COLUMNS) -> dict:
    """A table row: each column's value, its interval under row["ci"][column], the users it
    is scored on, and the constant-"Yes" F1 floor of its interaction set."""
    m, users = resolve(inp, ref)
    row = {"model": ref.label, "kind": ref.kind, "name": ref.name, "side": ref.side,
           "source": ref.path(inp.dataset), "outcomes": ref.outcome_path(inp.dataset), "present": m is not None,
           "users_scored": users, "ci": {},
           "all_users": ref.kind in ("domain", "floors") and "llm_users" not in (inp.get(ref.kind, ref.name) or {}),
           "f1_floor": None if m is None else m.get("binary", {}).get("f1_floor")}
    ci = {} if m is None else m.get("ci", {})
    for col in columns:
        proto, key = col[0], col[1]
        name = col[2] if len(col) > 2 else f"{proto}/{key}"
        row[name] = None if m is None else m.get(proto, {}).get(key)
        row["ci"][name] = ci.get(f"{proto}/{key}")
    if m is not None and m.get("not_computed"):
        row["not_computed"] = m["not_computed"]
    return row


def improvement(ours: list[dict], baselines: list[dict], names: list[str]) -> dict:
    """Per column: (best of ours - best baseline) / best baseline, in percent; None where a side is empty."""
    out = {}
    for c in names:
        a = [r[c] for r in ours if r[c] is not None]
        b = [r[c] for r in baselines if r[c] is not None]
        out[c] = (100.0 * (max(a) - max(b)) / max(b)) if a and b and max(b) > 0 else None
    return out


def users_summary(rows: list[dict]) -> dict:
    """The user counts a table's present rows are scored on: {"counts": {n: [labels]}, "same": bool}."""
    counts: dict = {}
    for r in rows:
        if r["present"]:
            n = r["users_scored"]
            counts.setdefault("?" if n is None else n, []).append(r["model"] + (" (all test users)" if r["all_users"]
                                                                                 else ""))
    order = sorted(counts, key=lambda n: (isinstance(n, str), n if isinstance(n, int) else 0))
    return {"counts": {str(k): counts[k] for k in order}, "same": len(counts) <= 1}


def f1_floors(rows: list[dict]) -> list[float]:
    return sorted({round(r["f1_floor"], 4) for r in rows if r["present"] and r.get("f1_floor") is not None})


def _table(inp: Inputs, base_refs: list[Ref], our_refs: list[Ref], columns=T3_COLUMNS) -> dict:
    names = [c[2] for c in columns]
    base = [metric_row(inp, r, columns) for r in base_refs]
    ours = [metric_row(inp, r, columns) for r in our_refs]
    rows = base + ours
    real = [r for r in base if r["kind"] != "floors"]  # a floor is a reference, not a baseline to beat
    return {"columns": names, "rows": rows, "improvement": improvement(ours, real, names),
            "users": users_summary(rows), "f1_floor": f1_floors(rows)}


def table3(inp: Inputs) -> dict:
    t = _table(inp, with_floors(T3_BASELINES), T3_BDLM)
    t["improvement_note"] = "best BDLM row vs best baseline row (floors excluded), relative %"
    return t


def table4(inp: Inputs) -> dict:
    t = _table(inp, T4_BASELINES + [MOSTPOP] + FLOOR_ROWS, T4_BDLM)
    t["improvement"] = improvement(t["rows"][-2:], t["rows"][:1], t["columns"])
    t["improvement_note"] = "best BDLM-NCF row vs NCF, relative %"
    return t


def ablation(inp: Inputs) -> dict:
    rows = [metric_row(inp, r) for r in ABLATION + FLOOR_ROWS]
    return {"columns": [c[2] for c in T3_COLUMNS], "rows": rows, "users": users_summary(rows),
            "f1_floor": f1_floors(rows)}


def cao_table(inp: Inputs) -> dict:
    """Cao et al.'s protocols for every model, floor, variant and joint side that has any of them."""
    rows = [metric_row(inp, r, CAO_COLUMNS) for r in scored_refs(inp)]
    names = [f"{p}/{k}" for p, k in CAO_COLUMNS]
    rows = [r for r in rows if any(r[c] is not None for c in names)]
    return {"columns": names, "rows": rows, "users": users_summary(rows)}
