"""Result tables: one row per model, the columns of BDLM Table 3 plus the retrieval and
ranking protocols, as markdown and JSON."""
from __future__ import annotations

from typing import Iterable

# (protocol, metric) columns, in the order of BDLM Table 3, then Cao et al.'s protocols.
COLUMNS = [("topk", "HR@1"), ("topk", "HR@2"), ("binary", "precision"), ("binary", "recall"), ("binary", "f1"),
           ("retrieval", "Recall@10"), ("retrieval", "NDCG@10"), ("ranking", "HR@1"), ("ranking", "NDCG@10")]

# How BDLM's Table 3 names the domain models.
DISPLAY = {"ncf": "NCF", "gmf": "GMF", "sasrec": "SASRec", "gru4rec": "GRU4Rec", "bert4rec": "BERT4Rec",
           "lightgcn": "LGCN", "mf": "MF (BPR)", "mostpop": "MostPop", "itemknn": "ItemKNN",
           "mf_rating": "MF (rating)"}


def table_rows(results: Iterable[dict]) -> list[dict]:
    rows = []
    for r in results:
        row = {"model": DISPLAY.get(r["model"], r["model"]), "train_seconds": r.get("train_seconds")}
        for protocol, metric in COLUMNS:
            row[f"{protocol}/{metric}"] = r.get(protocol, {}).get(metric)
        if "rating" in r:
            row["rating/RMSE"], row["rating/MAE"] = r["rating"]["RMSE"], r["rating"]["MAE"]
        rows.append(row)
    return rows


def markdown(rows: list[dict], title: str) -> str:
    cols = [f"{p}/{m}" for p, m in COLUMNS]
    best = {c: max((r[c] for r in rows if r[c] is not None), default=None) for c in cols}
    head = ["model", *[c.replace("topk/", "top-K ").replace("binary/", "").replace("/", " ") for c in cols], "train s"]
    lines = [f"## {title}", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = []
        for c in cols:
            v = r[c]
            cells.append("-" if v is None else (f"**{v:.4f}**" if v == best[c] else f"{v:.4f}"))
        secs = "-" if r["train_seconds"] is None else f"{r['train_seconds']:.0f}"
        lines.append(f"| {r['model']} | " + " | ".join(cells) + f" | {secs} |")
    rated = [r for r in rows if "rating/RMSE" in r]
    if rated:
        lines += ["", "Rating prediction (test): " + ", ".join(
            f"{r['model']} RMSE {r['rating/RMSE']:.4f}, MAE {r['rating/MAE']:.4f}" for r in rated)]
    return "\n".join(lines) + "\n"
