"""Result tables, the one place for them: the domain baseline table (stage baselines) and the
paper-style report (stage report): BDLM Table 3, ablations, Table 4, the lambda sweep and
Cao et al.'s protocols, as markdown and JSON, from whatever metrics files exist."""
from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

from pipeline.errors import PipelineError

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


# --------------------------------------------------------------------------------------
# The paper-style report (stage `report`): BDLM Table 3, the ablation table, Table 4, the
# lambda sweep and Cao et al.'s protocols, from whatever metrics files exist.
# --------------------------------------------------------------------------------------
# Metrics folders the report reads, data/metrics/<kind>/<dataset>/<name>.json.
KINDS = ("domain", "pretrain", "llm", "sft", "joint", "joint_train")

# BDLM Table 3's columns: (protocol, key in our metrics, column name in the paper).
T3_COLUMNS = [("topk", "HR@1", "HR@1"), ("topk", "HR@2", "HR@2"), ("binary", "precision", "prec"),
              ("binary", "recall", "rec"), ("binary", "f1", "f1")]
# Cao et al.'s protocols.
CAO_COLUMNS = [("retrieval", "Recall@5"), ("retrieval", "NDCG@5"), ("retrieval", "Recall@10"), ("retrieval", "NDCG@10"),
               ("ranking", "NDCG@5"), ("ranking", "NDCG@10"), ("ranking", "HR@1"), ("ranking", "HR@5"),
               ("ranking", "HR@10"), ("rating", "RMSE"), ("rating", "MAE")]
PROTOCOLS = ("topk", "binary", "retrieval", "ranking", "rating")


@dataclass(frozen=True)
class Ref:
    """One row's source: a domain model, an SFT variant, or one side of a joint experiment."""
    label: str
    kind: str                 # domain | llm | joint
    name: str                 # model / variant / experiment
    side: str | None = None   # joint only: llm | drs

    def path(self, ds: str) -> str:
        return f"data/metrics/{self.kind}/{ds}/{self.name}.json"


# Rows of BDLM Table 3. InstructRec's row is our LLM-only SFT (BDLM tokens + aux tasks, no
# mutual learning); LLM-Rec and GPT4SM are not reproduced.
T3_BASELINES = [Ref("NCF", "domain", "ncf"), Ref("GMF", "domain", "gmf"), Ref("SASRec", "domain", "sasrec"),
                Ref("GRU4Rec", "domain", "gru4rec"), Ref("BERT4Rec", "domain", "bert4rec"),
                Ref("LGCN", "domain", "lightgcn"), Ref("MostPop", "domain", "mostpop"),
                Ref("ItemKNN", "domain", "itemknn"), Ref("LLM-only SFT", "llm", "full")]
T3_BDLM = [Ref("BDLM-llm", "joint", "bdlm", "llm"), Ref("BDLM-drs", "joint", "bdlm", "drs")]
# Ablations. w/o PE, w/o ET and w/o aux are SFT-only variants (no mutual learning): compare
# them with the LLM-only SFT row; BDLM and w/o JL are joint experiments, read on the LLM side.
ABLATION = [Ref("BDLM", "joint", "bdlm", "llm"), Ref("w/o JL", "joint", "wo_jl", "llm"),
            Ref("w/o PE", "llm", "no_pe"), Ref("w/o ET", "llm", "no_et"), Ref("w/o aux", "llm", "no_aux"),
            Ref("LLM-only SFT", "llm", "full")]
# BDLM Table 4: BDLM with NCF as the domain model.
T4_BASELINES = [Ref("NCF", "domain", "ncf")]
T4_BDLM = [Ref("BDLM-NCF-llm", "joint", "ncf", "llm"), Ref("BDLM-NCF-drs", "joint", "ncf", "drs")]


@dataclass
class Inputs:
    """Every metrics file found for one dataset, parsed and checked."""
    dataset: str
    files: dict[tuple[str, str], dict] = field(default_factory=dict)   # (kind, name) -> json
    domain_users: int | None = None   # test users the domain models are scored on (all of them)

    def get(self, kind: str, name: str) -> dict | None:
        return self.files.get((kind, name))


def _number(v) -> bool:
    return v is None or (isinstance(v, (int, float)) and not isinstance(v, bool))


def _check_metrics(m: object, where: str) -> None:
    """A metrics block: a dict whose protocol sections map metric names to numbers."""
    if not isinstance(m, dict):
        raise PipelineError(f"{where}: expected a JSON object, got {type(m).__name__}")
    for proto in PROTOCOLS:
        if proto not in m:
            continue
        sec = m[proto]
        if not isinstance(sec, dict):
            raise PipelineError(f"{where}: '{proto}' should map metric names to numbers, got {type(sec).__name__}")
        bad = [k for k, v in sec.items() if not _number(v)]
        if bad:
            raise PipelineError(f"{where}: '{proto}.{bad[0]}' is {sec[bad[0]]!r}, not a number")
    if "users_scored" in m and not (isinstance(m["users_scored"], int) and not isinstance(m["users_scored"], bool)):
        raise PipelineError(f"{where}: 'users_scored' is {m['users_scored']!r}, not an integer")


def read_metrics(path: Path, kind: str) -> dict:
    """Parse one metrics file; anything malformed is a PipelineError that names the file."""
    try:
        obj = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise PipelineError(f"{path}: not a readable JSON metrics file ({e})") from e
    if kind in ("domain", "llm"):
        _check_metrics(obj, str(path))
        if kind == "domain" and "llm_users" in obj:
            _check_metrics(obj["llm_users"], f"{path} [llm_users]")
    elif kind == "joint":
        _check_metrics(obj, str(path))
        for side in ("llm", "drs"):
            if side not in obj:
                raise PipelineError(f"{path}: joint metrics need an '{side}' block (keys: {sorted(obj)})")
            _check_metrics(obj[side], f"{path} [{side}]")
        if "lambda" in obj and not _number(obj["lambda"]):
            raise PipelineError(f"{path}: 'lambda' is {obj['lambda']!r}, not a number")
    else:  # pretrain, sft, joint_train: training records
        if not isinstance(obj, dict):
            raise PipelineError(f"{path}: expected a JSON object, got {type(obj).__name__}")
        if "train_seconds" in obj and not _number(obj["train_seconds"]):
            raise PipelineError(f"{path}: 'train_seconds' is {obj['train_seconds']!r}, not a number")
        hist = obj.get("history", [])
        if not isinstance(hist, list) or not all(isinstance(h, dict) for h in hist):
            raise PipelineError(f"{path}: 'history' should be a list of {{step, loss, ...}} objects")
    return obj


def collect(data: Path, ds: str) -> Inputs:
    """Read data/metrics/<kind>/<ds>/*.json for every kind the report uses (absent folders are skipped)."""
    inp = Inputs(ds)
    for kind in KINDS:
        for f in sorted((Path(data) / "metrics" / kind / ds).glob("*.json")):
            inp.files[(kind, f.stem)] = read_metrics(f, kind)
    split = Path(data) / "metrics" / "split" / f"{ds}.json"
    if split.exists():
        s = read_metrics(split, "split")
        inp.domain_users = s.get("evaluated_users", s.get("test", {}).get("interactions"))
    return inp


def resolve(inp: Inputs, ref: Ref) -> tuple[dict | None, int | None]:
    """(metrics block, users scored) for a row, or (None, None) when its file is absent."""
    obj = inp.get(ref.kind, ref.name)
    if obj is None:
        return None, None
    if ref.kind == "domain":
        sub = obj.get("llm_users")  # scored on the LLM rows' users: every row compares alike
        return (sub, sub.get("users_scored")) if sub is not None else (obj, inp.domain_users)
    if ref.kind == "joint":
        block = obj[ref.side]
        return block, block.get("users_scored", obj.get("users_scored"))
    return obj, obj.get("users_scored")


def metric_row(inp: Inputs, ref: Ref, columns=T3_COLUMNS) -> dict:
    m, users = resolve(inp, ref)
    row = {"model": ref.label, "source": ref.path(inp.dataset), "present": m is not None, "users_scored": users,
           "all_users": ref.kind == "domain" and "llm_users" not in (inp.get(ref.kind, ref.name) or {})}
    for col in columns:
        proto, key = col[0], col[1]
        name = col[2] if len(col) > 2 else f"{proto}/{key}"
        row[name] = None if m is None else m.get(proto, {}).get(key)
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


def table3(inp: Inputs) -> dict:
    names = [c[2] for c in T3_COLUMNS]
    base = [metric_row(inp, r) for r in T3_BASELINES]
    ours = [metric_row(inp, r) for r in T3_BDLM]
    return {"columns": names, "rows": base + ours, "improvement": improvement(ours, base, names),
            "improvement_note": "best BDLM row vs best baseline row, relative %"}


def table4(inp: Inputs) -> dict:
    names = [c[2] for c in T3_COLUMNS]
    base = [metric_row(inp, r) for r in T4_BASELINES]
    ours = [metric_row(inp, r) for r in T4_BDLM]
    return {"columns": names, "rows": base + ours, "improvement": improvement(ours, base, names),
            "improvement_note": "best BDLM-NCF row vs NCF, relative %"}


def ablation(inp: Inputs) -> dict:
    return {"columns": [c[2] for c in T3_COLUMNS], "rows": [metric_row(inp, r) for r in ABLATION]}


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
    """[{lambda, side, HR@1, f1, users_scored, experiment}] from the lambda_<v> experiments (and
    `bdlm` and `wo_jl` where their lambda is not already in the sweep), sorted by lambda then side."""
    points: dict[float, tuple[str, dict]] = {}
    for (kind, name), obj in inp.files.items():
        if kind == "joint" and name.startswith("lambda_"):
            lam = _lambda_of(name, obj)
            if lam is None:
                raise PipelineError(f"data/metrics/joint/{inp.dataset}/{name}.json: no 'lambda' and none in its name")
            points[lam] = (name, obj)
    for name in ("bdlm", "wo_jl"):  # the default run's two experiments are sweep points too
        obj = inp.get("joint", name)
        if obj is not None and (lam := _lambda_of(name, obj)) is not None and lam not in points:
            points[lam] = (name, obj)
    out = []
    for lam in sorted(points):
        name, obj = points[lam]
        for side in ("llm", "drs"):
            blk = obj[side]
            out.append({"lambda": lam, "side": side, "HR@1": blk.get("topk", {}).get("HR@1"),
                        "f1": blk.get("binary", {}).get("f1"),
                        "users_scored": blk.get("users_scored", obj.get("users_scored")), "experiment": name})
    return out


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


def ablation_plot(abl: dict) -> list[dict]:
    return [{"variant": r["model"], "HR@1": r["HR@1"], "f1": r["f1"]} for r in abl["rows"] if r["present"]]


def cao_table(inp: Inputs) -> dict:
    """Cao et al.'s protocols for every model, variant and joint side that has any of them."""
    refs = [Ref(DISPLAY.get(n, n), "domain", n) for (k, n) in inp.files if k == "domain"]
    refs += [Ref(f"LLM SFT {n}", "llm", n) for (k, n) in inp.files if k == "llm"]
    refs += [Ref(f"joint {n} ({s})", "joint", n, s) for (k, n) in inp.files if k == "joint" for s in ("llm", "drs")]
    rows = [metric_row(inp, r, CAO_COLUMNS) for r in refs]
    names = [f"{p}/{k}" for p, k in CAO_COLUMNS]
    return {"columns": names, "rows": [r for r in rows if any(r[c] is not None for c in names)]}


def training(inp: Inputs) -> list[dict]:
    out = []
    for (kind, name), obj in sorted(inp.files.items()):
        if kind in ("pretrain", "sft", "joint_train"):
            hist = obj.get("history") or []
            final = {k: v for k, v in (hist[-1] if hist else {}).items()
                     if k not in ("step", "epoch", "lr") and isinstance(v, (int, float)) and not isinstance(v, bool)}
            last = final.get("loss", obj.get("final_loss"))
            out.append({"kind": kind, "name": name, "train_seconds": obj.get("train_seconds"),
                        "steps": len(hist) or None, "final_loss": last if _number(last) else None,
                        "final": final, "source": f"data/metrics/{kind}/{inp.dataset}/{name}.json"})
    return out


def expected_missing(inp: Inputs) -> list[str]:
    """Files a table row needs that are not there, in table order, without repeats."""
    refs = T3_BASELINES + T3_BDLM + ABLATION + T4_BASELINES + T4_BDLM
    seen = []
    for r in refs:
        p = r.path(inp.dataset)
        if inp.get(r.kind, r.name) is None and p not in seen:
            seen.append(p)
    if not any(k == "joint" and n.startswith("lambda_") for k, n in inp.files):
        seen.append(f"data/metrics/joint/{inp.dataset}/lambda_<value>.json (lambda sweep)")
    return seen


SWEEP = "bdlm,wo_jl,lambda_1e-3,lambda_1e-1,lambda_1,lambda_10"


def how_to_produce(missing: str) -> str:
    """The params change that produces a missing metrics file (the default run leaves the
    opt-in sets out: NCF joint training, the lambda sweep, extra SFT variants)."""
    parts = missing.split("/")  # data/metrics/<kind>/<ds>/<name>.json
    kind, name = parts[2], parts[4].split(".json")[0]
    if name.startswith("lambda_"):
        return f"opt-in, `dvc exp run -S 'joint.experiments=[{SWEEP}]'`"
    lists = {"llm": "llm.variants", "joint": "joint.experiments", "domain": "domain.models"}
    if kind in lists:
        return f"add `{name}` to `{lists[kind]}` (e.g. `dvc exp run -S ...`)"
    return "its stage has not run"


def build_report(inp: Inputs, variants: list[str] = ()) -> dict:
    """Everything the report shows; `variants` (llm.variants) name the SFT loss plot's fields."""
    abl = ablation(inp)
    curve = lambda_curve(inp)
    return {"dataset": inp.dataset, "domain_users": inp.domain_users, "table3": table3(inp), "ablation": abl,
            "table4": table4(inp), "lambda": curve, "cao": cao_table(inp), "training": training(inp),
            "missing": expected_missing(inp),
            "plots": {"ablation": ablation_plot(abl), "lambda": lambda_plot(curve),
                      "sft_loss": sft_loss_plot(inp, list(variants))}}


# ---- markdown ----
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
    """Rows x columns, best present value per column in bold, a users column, optional improvement row."""
    best = {c: max((r[c] for r in rows if r[c] is not None), default=None) for c in columns}
    lower_better = {c for c in columns if c.endswith(("RMSE", "MAE"))}
    for c in lower_better:
        best[c] = min((r[c] for r in rows if r[c] is not None), default=None)
    head = ["Models", *(headers or columns), "users scored"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [("**" + _fmt(r[c], digits) + "**") if r[c] is not None and r[c] == best[c] and
                 sum(1 for x in rows if x[c] is not None) > 1 else _fmt(r[c], digits) for c in columns]
        lines.append(f"| {r['model']} | " + " | ".join(cells) + f" | {_users(r)} |")
    if improvement is not None:
        lines.append(f"| {improvement_label} | " + " | ".join(_pct(improvement[c]) for c in columns) + " | |")
    return "\n".join(lines)


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
                      " `evaluate_llm.max_users` / `seed`): domain models too, so rows compare like with like."
                      f" The domain models on every test user ({rep['domain_users']}) are in"
                      f" `data/reports/{ds}/baselines.md`. '-' = not available.")
    out = [f"# Report: {ds} (test split)", "", users_note, "",
           "## Table 3: domain baselines, LLM-only SFT and BDLM (BDLM paper layout)", "",
           "HR@1/HR@2: top-K over 1 positive + 19 negatives; prec/rec/f1: interaction prediction"
           " (1 + 1, threshold chosen on valid). LLM-only SFT = BDLM tokens pre-loaded + auxiliary"
           " tasks, no mutual learning (the paper's InstructRec row). Improv. = best BDLM row vs the"
           " best baseline row (LLM-only SFT included), relative.", "",
           md_metric_table(t3["rows"], t3["columns"], improvement=t3["improvement"]), "",
           "## Ablations", "",
           "BDLM and w/o JL are joint experiments read on the LLM side; w/o PE (random token rows),"
           " w/o ET (ids as plain text) and w/o aux (no MIM/BPR/MLM) are SFT-only variants with no"
           " mutual learning, so compare them with the LLM-only SFT row.", "",
           md_metric_table(rep["ablation"]["rows"], rep["ablation"]["columns"]), "",
           "## Table 4: BDLM with NCF as the domain model", "",
           md_metric_table(rep["table4"]["rows"], rep["table4"]["columns"], improvement=rep["table4"]["improvement"]),
           "", "## Mutual-learning weight λ", ""]
    if rep["lambda"]:
        out += ["| λ | side | HR@1 | f1 | users scored | experiment |", "|---|---|---|---|---|---|"]
        out += [f"| {p['lambda']:g} | {p['side']} | {_fmt(p['HR@1'])} | {_fmt(p['f1'])} | "
                f"{p['users_scored'] if p['users_scored'] is not None else '?'} | {p['experiment']} |"
                for p in rep["lambda"]]
    else:
        out.append("No λ sweep yet (data/metrics/joint/<ds>/lambda_<value>.json).")
    cao = rep["cao"]
    out += ["", "## Cao et al. protocols", "",
            "Retrieval: full item set, the user's known items masked; ranking: 1 + 99; rating: RMSE/MAE"
            " (lower is better).", ""]
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
