"""The domain baseline table (stage baselines): every domain model and user-agnostic floor on
every test user (the metrics files' top-level blocks), each cell with its interval, as rows and
as markdown."""
from __future__ import annotations

from collections.abc import Iterable

from pipeline.eval.report.formatting import cell, num
from pipeline.eval.report.refs import DISPLAY, FLOOR_DISPLAY

# (protocol, metric, column header, digits)
COLUMNS = [("topk", "HR@1", "top-K HR@1", 3), ("topk", "HR@2", "top-K HR@2", 3),
           ("binary", "precision", "prec", 3), ("binary", "recall", "rec", 3), ("binary", "f1", "f1", 3),
           ("binary", "auc", "AUC", 3),
           ("retrieval", "Recall@10", "masked Recall@10", 4), ("retrieval", "NDCG@10", "masked NDCG@10", 4),
           ("retrieval_unmasked", "Recall@10", "unmasked Recall@10", 4),
           ("retrieval_unmasked", "NDCG@10", "unmasked NDCG@10", 4),
           ("ranking", "HR@1", "ranking HR@1", 3), ("ranking", "NDCG@10", "ranking NDCG@10", 3)]


def table_rows(results: Iterable[dict]) -> list[dict]:
    """One row per metrics file (top-level block: all users). A result is a domain or floors
    metrics file plus "train_seconds"; {"floor": name, "missing": path} for an absent floor."""
    rows = []
    for r in results:
        floor = r.get("floor")
        name = floor if floor is not None else r["model"]
        row = {"model": FLOOR_DISPLAY.get(name, name) if floor is not None else DISPLAY.get(name, name),
               "kind": "floors" if floor is not None else "domain", "present": "missing" not in r,
               "source": r.get("missing"), "train_seconds": r.get("train_seconds"),
               "users_scored": r.get("users_scored"), "f1_floor": r.get("binary", {}).get("f1_floor"), "ci": {}}
        ci = r.get("ci", {})
        for protocol, metric, _, _ in COLUMNS:
            key = f"{protocol}/{metric}"
            row[key], row["ci"][key] = r.get(protocol, {}).get(metric), ci.get(key)
        if "rating" in r:
            for key in ("RMSE", "MAE"):
                row[f"rating/{key}"], row["ci"][f"rating/{key}"] = r["rating"][key], ci.get(f"rating/{key}")
        rows.append(row)
    return rows


def markdown(rows: list[dict], title: str) -> str:
    cols = [f"{p}/{m}" for p, m, _, _ in COLUMNS]
    best = {c: max((r[c] for r in rows if r[c] is not None), default=None) for c in cols}
    head = ["model", *[h for _, _, h, _ in COLUMNS], "users", "train s"]
    users = sorted({r["users_scored"] for r in rows if r["present"] and r["users_scored"] is not None})
    floors = sorted({round(r["f1_floor"], 3) for r in rows if r["present"] and r["f1_floor"] is not None})
    lines = [f"## {title}", "",
             f"Every row on every test user ({', '.join(map(str, users)) or 'none scored'}"
             + ("; the rows differ in their user counts" if len(users) > 1 else "") + "). Each cell: value"
             " [95% interval] (Wilson for hit rates, bootstrap over users otherwise). Retrieval over the"
             " full item set, 'masked' = the user's known items removed (RecBole), 'unmasked' = nothing"
             " removed (P5/TIGER). Random, Centrality (title) and Centrality + pop. are user-agnostic"
             " floors (pipeline.eval.floors)."
             + (f" A constant \"Yes\" scores F1 {', '.join(num(f) for f in floors)} on the interaction"
                " sets (`binary.f1_floor`)." if floors else ""), "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        if not r["present"]:
            lines.append(f"| {r['model']} | " + " | ".join("-" for _ in cols) + " | missing | - |")
            continue
        cells = [cell(r[c], r["ci"].get(c), d, bold=r[c] is not None and r[c] == best[c])
                 for c, (_, _, _, d) in zip(cols, COLUMNS)]
        secs = "-" if r["train_seconds"] is None else f"{r['train_seconds']:.0f}"
        n = "?" if r["users_scored"] is None else str(r["users_scored"])
        lines.append(f"| {r['model']} | " + " | ".join(cells) + f" | {n} | {secs} |")
    rated = [r for r in rows if "rating/RMSE" in r]
    if rated:
        lines += ["", "Rating prediction (test): " + ", ".join(
            f"{r['model']} RMSE {cell(r['rating/RMSE'], r['ci'].get('rating/RMSE'), 4)},"
            f" MAE {cell(r['rating/MAE'], r['ci'].get('rating/MAE'), 4)}" for r in rated)]
    missing = [r["source"] for r in rows if not r["present"] and r["source"]]
    if missing:
        lines += ["", "Missing: " + ", ".join(f"`{m}`" for m in missing)]
    return "\n".join(lines) + "\n"
