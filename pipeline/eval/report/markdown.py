"""The report as markdown (data/reports/<ds>/report.md): the give-away statement, the user-count
notes, each table with its caption, the λ sweep, the claims, the paired tests, training times,
the missing inputs with how to produce them, and links to the plot files."""
from __future__ import annotations

import math

from pipeline import paths
from pipeline.eval.report.formatting import cell, interval, num, p_cell
from pipeline.eval.report.paired_tests import FAMILIES


def md_paired_tests(pt: dict) -> list[str]:
    pct = round(100 * pt["confidence"])
    out = ["## Paired tests", "",
           ("Two rows compared on the same users: those both have per-user outcomes for (a domain model or"
           " floor is restricted to the LLM user subset, the users the LLM rows are scored on); n is their"
           f" number. diff = a - b with its {pct}% interval; HR@k: exact McNemar test on the per-user hits,"
           " other metrics: paired bootstrap over users. p (Holm) is adjusted within each family; a"
           f" difference is called significant only when p (Holm) < {num(pt['alpha'], 2)}.")]
    for fam, title in FAMILIES.items():
        tests = pt["families"][fam]
        out += ["", f"### {title}", ""]
        if not tests:
            out.append("No comparison could be run (see the skipped list below).")
            continue
        out += ["| a | b | metric | n | diff [CI] | p | p (Holm) | verdict |", "|---|---|---|---|---|---|---|---|"]
        for x in tests:
            diff = "-" if x["diff"] is None else ("+" if x["diff"] > 0 else "") + num(x["diff"])
            b = x["b"] + (f" ({x['note']})" if x.get("note") else "")
            out.append(f"| {x['a']} | {b} | {'top-K' if x['protocol'] == 'topk' else x['protocol']} {x['metric']} |"
                       f" {x['n']} | {diff}{interval([x['low'], x['high']])} | {p_cell(x['p'])} | {p_cell(x['p_holm'])} |"
                       f" {x['verdict']} |")
        scopes = sorted({x["users"] for x in tests})
        out += ["", "Users: " + "; ".join(scopes) + "."]
    if pt["notes"]:
        out += ["", *(f"- {n}" for n in pt["notes"])]
    if pt["skipped"]:
        by_file: dict[str, list[str]] = {}
        for s in pt["skipped"]:
            for f in s["missing"] or [s["reason"]]:
                by_file.setdefault(f, []).append(f"{s['a']} vs {s['b']}")
        out += ["", f"Skipped ({len(pt['skipped'])} comparisons):"]
        out += [f"- `{f}`: {', '.join(dict.fromkeys(v))}" if f.startswith(f"{paths.DATA.as_posix()}/") else f"- {f}: {', '.join(v)}"
                for f, v in by_file.items()]
    return out


def md_claims(rows: list[dict]) -> list[str]:
    out = ["## The paper's BDLM claims, on this run", "",
           "Each claim read off the paired tests below (top-K HR@1, Holm-adjusted within its family):"
           " supported = significant in the claimed direction; contradicted = significant the other way;"
           " not shown = not distinguishable from noise on these users; not measured = a row is missing.", "",
           "| claim | verdict | evidence |", "|---|---|---|"]
    out += [f"| {r['claim']} | **{r['verdict']}** | {'; '.join(r['evidence']) or '-'} |" for r in rows]
    return out


SWEEP = "bdlm,wo_jl,lambda_1e-3,lambda_1e-1,lambda_1,lambda_10"


def how_to_produce(missing: str) -> str:
    """The params change that produces a missing metrics file (the default run leaves the
    opt-in sets out: NCF joint training, the lambda sweep, extra SFT variants)."""
    parts = missing.split("/")  # data/metrics/<kind>/<ds>/<name>.json or data/metrics/giveaway/<ds>.json
    kind = parts[2]
    if kind in ("floors", "giveaway"):
        ds = parts[3].split(".json")[0]
        return f"`dvc repro evaluate_floors@{ds}`"
    name = parts[4].split(".json")[0]
    if name.startswith("lambda_"):
        return f"opt-in, `dvc exp run -S 'joint.experiments=[{SWEEP}]'`"
    lists = {"llm": "llm.variants", "joint": "joint.experiments", "domain": "domain.models"}
    if kind in lists:
        return f"add `{name}` to `{lists[kind]}` (e.g. `dvc exp run -S ...`)"
    return "its stage has not run"


def _fmt(v, digits: int = 3) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    return f"{v:.{digits}f}"


def _users(r: dict) -> str:
    if not r["present"]:
        return "missing"
    if r["users_scored"] is None:
        return "?"
    return f"{r['users_scored']} (all)" if r["all_users"] else str(r["users_scored"])


def _pct(v) -> str:
    return "-" if v is None else f"({v:+.1f}%)"


def md_metric_table(rows: list[dict], columns: list[str], digits: int = 3, improvement: dict | None = None,
                    improvement_label: str = "(Improv.)", headers: list[str] | None = None) -> str:
    """Rows x columns, each cell `value [interval]`, the best present value per column in bold,
    a users column, optional improvement row."""
    best = {c: max((r[c] for r in rows if r[c] is not None), default=None) for c in columns}
    lower_better = {c for c in columns if c.endswith(("RMSE", "MAE"))}
    for c in lower_better:
        best[c] = min((r[c] for r in rows if r[c] is not None), default=None)
    head = ["Models", *(headers or columns), "users scored"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [cell(r[c], r.get("ci", {}).get(c), digits,
                      bold=r[c] is not None and r[c] == best[c] and sum(1 for x in rows if x[c] is not None) > 1)
                 for c in columns]
        lines.append(f"| {r['model']} | " + " | ".join(cells) + f" | {_users(r)} |")
    if improvement is not None:
        lines.append(f"| {improvement_label} | " + " | ".join(_pct(improvement[c]) for c in columns) + " | |")
    return "\n".join(lines)


def users_caption(table: dict) -> str:
    """The sentence that says how many users a table's rows are scored on."""
    counts = table["users"]["counts"]
    if not counts:
        return "No row of this table is scored yet."
    if table["users"]["same"]:
        (n, labels), = counts.items()
        every = " (every test user)" if any(lab.endswith("(all test users)") for lab in labels) else ""
        return f"Every row here is scored on the same {n} users{every}."
    parts = "; ".join(f"{n} users: {', '.join(labels)}" for n, labels in counts.items())
    return (f"**Rows of this table are scored on different numbers of users** ({parts}): a difference between"
            " rows of different user counts is only approximate; the paired tests compare rows on the users"
            " they share.")


def f1_caption(table: dict) -> str:
    floors = table.get("f1_floor") or []
    if not floors:
        return ""
    return (f" A constant \"Yes\" scores F1 {' / '.join(num(f) for f in floors)} on these interaction sets"
            " (`binary.f1_floor`): an f1 near it is no better than saying Yes to every pair.")


def markdown_report(rep: dict, plots: dict[str, str] | None = None) -> str:
    ds, t3 = rep["dataset"], rep["table3"]
    llm_users = sorted({r["users_scored"] for r in t3["rows"] + rep["ablation"]["rows"]
                        if r["present"] and not r["all_users"] and r["users_scored"] is not None})
    mixed = any(r["present"] and r["all_users"] for r in t3["rows"] + rep["table4"]["rows"])
    if mixed or not llm_users:
        users_note = ("Scored on different user sets. Domain models are scored on every test user"
                      f" ({rep['domain_users'] if rep['domain_users'] is not None else 'count unknown'});"
                      " LLM and joint (BDLM) rows on a seeded subset of test users"
                      f" ({', '.join(map(str, llm_users)) or 'none yet'}; `evaluate_llm.max_users`), the same"
                      " subset for every variant. Comparisons between a domain row and an LLM row are therefore"
                      " only approximate; the `users scored` column gives each row's count. '-' = not available.")
    else:
        users_note = (f"Every row is scored on the same seeded subset of test users ({', '.join(map(str, llm_users))};"
                      " `evaluate_llm.max_users` / `seed`): domain models and floors too, so rows compare like"
                      f" with like. The domain models on every test user ({rep['domain_users']}) are in"
                      f" `data/reports/{ds}/baselines.md`. '-' = not available.")
    cells = ("Each cell: value [95% interval] (Wilson for hit rates, bootstrap over users otherwise)."
             " Random, Centrality (title) and Centrality + pop. are user-agnostic floors (they never see"
             " the user): a row is only worth what it adds over them.")
    out = [f"# Report: {ds} (test split)", "", rep["giveaway"]["sentence"], "", users_note, "", cells, "",
           "## Table 3: domain baselines, LLM-only SFT and BDLM (BDLM paper layout)", "",
           "HR@1/HR@2: top-K over 1 positive + 19 negatives; prec/rec/f1/AUC/acc: interaction prediction"
           " (1 + 1, threshold chosen on valid). LLM-only SFT = BDLM tokens pre-loaded + auxiliary"
           " tasks, no mutual learning; InstructRec-style = SFT with ids as plain text (InstructRec is"
           " text-only instruction tuning). Improv. = best BDLM row vs the"
           " best baseline row (LLM-only SFT included, floors excluded), relative." + f1_caption(t3) + " "
           + users_caption(t3), "",
           md_metric_table(t3["rows"], t3["columns"], improvement=t3["improvement"]), "",
           "## Ablations", "",
           "BDLM, w/o JL (λ = 0), w/o PE (random token rows) and w/o ET (ids as plain text, no M) are"
           " joint experiments through one trainer with the same steps, batch, task mix and users, so"
           " each changes exactly one thing; each is read on the LLM side and on the DRS side. w/o aux"
           " (no MIM/BPR/MLM) and w/o PE (SFT) are SFT variants: compare them with LLM-only SFT." + f1_caption(rep["ablation"]) + " "
           + users_caption(rep["ablation"]), "",
           md_metric_table(rep["ablation"]["rows"], rep["ablation"]["columns"]), "",
           "## Table 4: BDLM with NCF as the domain model", "",
           "Improv. = best BDLM-NCF row vs NCF, relative." + f1_caption(rep["table4"]) + " "
           + users_caption(rep["table4"]), "",
           md_metric_table(rep["table4"]["rows"], rep["table4"]["columns"], improvement=rep["table4"]["improvement"]),
           "", "## Mutual-learning weight λ", ""]
    if rep["lambda"]:
        ns = sorted({p["users_scored"] for p in rep["lambda"] if p["users_scored"] is not None})
        out += [f"Every point is scored on the same {ns[0]} users." if len(ns) == 1 else
                f"**Points are scored on different numbers of users** ({', '.join(map(str, ns)) or '?'}).", "",
                "L_ml: the side's last mutual-learning loss (per row: squared distance summed over the hidden"
                " dims, averaged over rows); drift: how far its user rows moved from their start (mean row"
                " distance / mean row norm); gap: mean distance between the LLM's and the DRS's user rows.", "",
                "| λ | side | HR@1 | f1 | L_ml | drift | gap | users scored | experiment |",
                "|---|---|---|---|---|---|---|---|---|"]
        out += [f"| {p['lambda']:g} | {p['side']} | {cell(p['HR@1'], p['ci']['HR@1'])} | {cell(p['f1'], p['ci']['f1'])}"
                f" | {_fmt(p.get('L_ml'), 4)} | {_fmt(p.get('drift'), 4)} | {_fmt(p.get('gap'), 3)}"
                f" | {p['users_scored'] if p['users_scored'] is not None else '?'} | {p['experiment']} |"
                for p in rep["lambda"]]
    else:
        out.append("No λ sweep yet (data/metrics/joint/<ds>/lambda_<value>.json).")
    cao = rep["cao"]
    out += ["", "## Cao et al. protocols", "",
            "Retrieval: full item set, the user's known items masked; ranking: 1 + 99; rating: RMSE/MAE"
            " (lower is better)." + (" " + users_caption(cao) if cao["rows"] else ""), ""]
    if cao["rows"]:
        heads = [c.replace("retrieval/", "ret ").replace("ranking/", "rank ").replace("rating/", "")
                 for c in cao["columns"]]
        out.append(md_metric_table(cao["rows"], cao["columns"], digits=4, headers=heads))
        notes = [f"{r['model']}: {p} not computed ({why})" for r in cao["rows"]
                 for p, why in (r.get("not_computed") or {}).items()]
        if notes:
            out += ["", *(f"- {n}" for n in notes)]
    else:
        out.append("No model has these metrics yet.")
    out += ["", *md_claims(rep["claims"]), "", *md_paired_tests(rep["paired_tests"])]
    if rep["training"]:
        out += ["", "## Training", "", "| stage | run | seconds | logged steps/epochs | final loss |",
                "|---|---|---|---|---|"]
        out += [f"| {t['kind']} | {t['name']} | {_fmt(t['train_seconds'], 0)} | {t['steps'] or '-'} | "
                + (_fmt(t["final_loss"], 4) if t["final_loss"] is not None or not t["final"] else
                   ", ".join(f"{k} {v:.4g}" for k, v in t["final"].items())) + " |" for t in rep["training"]]
    out += ["", "## Missing inputs", ""]
    out += [f"- `{m}`: {how_to_produce(m)}" for m in rep["missing"]] or ["None: every table row has its metrics file."]
    out += ["", "## Plots", "",
            "Render with `dvc plots show` (writes `dvc_plots/index.html`) or `dvc plots show <file>`."]
    for name, path in (plots or {}).items():
        out.append(f"- {name}: [`{path}`]({path})")
    return "\n".join(out) + "\n"
