"""Result tables, the one place for them: the domain baseline table (stage baselines) and the
paper-style report (stage report): BDLM Table 3, ablations, Table 4, the lambda sweep and
Cao et al.'s protocols, as markdown and JSON, from whatever metrics files exist.

Every metric cell carries its interval (the metrics file's "ci", schema 2); the user-agnostic
floors (pipeline.eval.floors) are rows of every table; the give-away check of the candidate sets
heads the report; and rows are compared by paired tests on the users they share, read from
their per-user outcomes (data/outcomes/<kind>/<ds>/<name>.parquet)."""
from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pipeline import paths
from pipeline.errors import PipelineError

# The metrics-file schema the tables need: pipeline.eval.evaluator.METRICS_SCHEMA (not imported:
# that module pulls in torch, which the report has no use for). Older files have no "ci".
METRICS_SCHEMA = 2

# How BDLM's Table 3 names the domain models.
DISPLAY = {"ncf": "NCF", "gmf": "GMF", "sasrec": "SASRec", "gru4rec": "GRU4Rec", "bert4rec": "BERT4Rec",
           "lightgcn": "LGCN", "mf": "MF (BPR)", "mostpop": "MostPop", "itemknn": "ItemKNN",
           "mf_rating": "MF (rating)"}
# The user-agnostic floors (pipeline.eval.floors.FLOORS), as the tables name them.
FLOOR_DISPLAY = {"random": "Random", "centrality": "Centrality (title)", "centrality_pop": "Centrality + pop."}


# ---- number formatting: `.215 [.189, .243]` ----
def _num(v, digits: int = 3) -> str:
    """A number without its leading zero (.215, -.050, 1.020); '-' for None / NaN."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    s = f"{v:.{digits}f}"
    if s.startswith("0."):
        return s[1:]
    if s.startswith("-0."):
        return "-" + s[2:]
    return s


def _interval(ci, digits: int = 3) -> str:
    if not ci or ci[0] is None or ci[1] is None:
        return ""
    return f" [{_num(ci[0], digits)}, {_num(ci[1], digits)}]"


def cell(v, ci=None, digits: int = 3, bold: bool = False) -> str:
    """One metric cell: the value (bold if best) and its interval, e.g. `.215 [.189, .243]`."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    s = _num(v, digits)
    return (f"**{s}**" if bold else s) + _interval(ci, digits)


def _p(p) -> str:
    if p is None or (isinstance(p, float) and math.isnan(p)):
        return "-"
    return "<.001" if p < 0.001 else _num(p, 3)


# --------------------------------------------------------------------------------------
# The domain baseline table (stage `baselines`): every domain model and floor on every test
# user (the metrics files' top-level blocks), with intervals.
# --------------------------------------------------------------------------------------
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
             + (f" A constant \"Yes\" scores F1 {', '.join(_num(f) for f in floors)} on the interaction"
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


# --------------------------------------------------------------------------------------
# The paper-style report (stage `report`): BDLM Table 3, the ablation table, Table 4, the
# lambda sweep and Cao et al.'s protocols, from whatever metrics files exist.
# --------------------------------------------------------------------------------------
# Metrics folders the report reads, data/metrics/<kind>/<dataset>/<name>.json.
KINDS = ("domain", "floors", "pretrain", "llm", "sft", "joint", "joint_train")
# Kinds whose files are scored rows (schema 2, intervals, per-user outcomes).
SCORED = ("domain", "floors", "llm", "joint")
# Outcome folders the paired tests read, data/outcomes/<kind>/<dataset>/<name>.parquet.
OUTCOME_KINDS = SCORED

# BDLM Table 3's columns: (protocol, key in our metrics, column name in the paper). AUC and
# accuracy sit beside prec/rec/f1: a threshold-free and a plain view of interaction prediction.
T3_COLUMNS = [("topk", "HR@1", "HR@1"), ("topk", "HR@2", "HR@2"), ("binary", "precision", "prec"),
              ("binary", "recall", "rec"), ("binary", "f1", "f1"), ("binary", "auc", "AUC"),
              ("binary", "accuracy", "acc")]
# Cao et al.'s protocols.
CAO_COLUMNS = [("retrieval", "Recall@5"), ("retrieval", "NDCG@5"), ("retrieval", "Recall@10"), ("retrieval", "NDCG@10"),
               ("ranking", "NDCG@5"), ("ranking", "NDCG@10"), ("ranking", "HR@1"), ("ranking", "HR@5"),
               ("ranking", "HR@10"), ("rating", "RMSE"), ("rating", "MAE")]
PROTOCOLS = ("topk", "binary", "retrieval", "retrieval_unmasked", "ranking", "rating")

# The stage that writes each kind of scored file (dvc.yaml), named in "re-run" messages.
PRODUCER = {"domain": "evaluate_domain@{ds}-{name}", "floors": "evaluate_floors@{ds}",
            "llm": "evaluate_llm@{ds}-{name}", "joint": "evaluate_joint@{ds}-{name}"}


@dataclass(frozen=True)
class Ref:
    """One row's source: a domain model, a floor, an SFT variant, or one side of a joint experiment."""
    label: str
    kind: str                 # domain | floors | llm | joint
    name: str                 # model / floor / variant / experiment
    side: str | None = None   # joint only: llm | drs

    def path(self, ds: str) -> str:
        return paths.metrics_of(self.kind, ds, self.name).as_posix()

    def outcome_name(self) -> str:
        return f"{self.name}-{self.side}" if self.kind == "joint" else self.name

    def outcome_path(self, ds: str) -> str:
        """data/outcomes/<kind>/<ds>/<name>.parquet (joint: <experiment>-<side>), as paths.outcomes."""
        return paths.outcomes(self.kind, ds, self.outcome_name()).as_posix()

    @property
    def key(self) -> tuple:
        return (self.kind, self.name, self.side)


FLOOR_ROWS = [Ref("Random", "floors", "random"), Ref("Centrality (title)", "floors", "centrality"),
              Ref("Centrality + pop.", "floors", "centrality_pop")]
MOSTPOP = Ref("MostPop", "domain", "mostpop")
RANDOM = FLOOR_ROWS[0]
# Rows of BDLM Table 3. InstructRec is text-only instruction tuning: its row here is our SFT
# with ids as plain text (variant no_et); LLM-only SFT is BDLM's pre-loaded tokens + aux tasks
# with no mutual learning. LLM-Rec and GPT4SM are not reproduced. The floors sit beside MostPop.
INSTRUCTREC = Ref("InstructRec-style (text-only SFT)", "llm", "no_et")
LLM_ONLY = Ref("LLM-only SFT", "llm", "full")
T3_BASELINES = [Ref("NCF", "domain", "ncf"), Ref("GMF", "domain", "gmf"), Ref("SASRec", "domain", "sasrec"),
                Ref("GRU4Rec", "domain", "gru4rec"), Ref("BERT4Rec", "domain", "bert4rec"),
                Ref("LGCN", "domain", "lightgcn"), MOSTPOP,
                Ref("ItemKNN", "domain", "itemknn"), INSTRUCTREC, LLM_ONLY]
T3_BDLM = [Ref("BDLM-llm", "joint", "bdlm", "llm"), Ref("BDLM-drs", "joint", "bdlm", "drs")]
# Ablations: four joint experiments through one trainer and one budget (each changes one
# thing: lambda = 0, random token rows, ids as text), read on both sides; then the SFT rows
# (LLM-only SFT beside Cao et al.'s w/o aux and the randomly initialised tokens' w/o PE).
ABLATION_STEPS = [("BDLM", "bdlm"), ("w/o JL", "wo_jl"), ("w/o PE", "wo_pe"), ("w/o ET", "wo_et")]
ABLATION = ([Ref(f"{label} ({side})", "joint", name, side) for side in ("llm", "drs") for label, name in ABLATION_STEPS]
            + [LLM_ONLY, Ref("w/o aux (SFT)", "llm", "no_aux"), Ref("w/o PE (SFT)", "llm", "no_pe"),
               Ref("+ align loss (SFT, an option)", "llm", "align")])
# BDLM Table 4: BDLM with NCF as the domain model.
T4_BASELINES = [Ref("NCF", "domain", "ncf")]
T4_BDLM = [Ref("BDLM-NCF-llm", "joint", "ncf", "llm"), Ref("BDLM-NCF-drs", "joint", "ncf", "drs")]


def _with_floors(refs: list[Ref]) -> list[Ref]:
    """refs with the floor rows right after MostPop (at the end when MostPop is not there)."""
    at = next((i + 1 for i, r in enumerate(refs) if r == MOSTPOP), len(refs))
    return refs[:at] + FLOOR_ROWS + refs[at:]


@dataclass
class Inputs:
    """Every metrics file found for one dataset, parsed and checked."""
    dataset: str
    files: dict[tuple[str, str], dict] = field(default_factory=dict)   # (kind, name) -> json
    domain_users: int | None = None   # test users the domain models are scored on (all of them)
    giveaway: dict | None = None      # data/metrics/giveaway/<ds>.json
    data: Path | None = None          # the data/ folder: where the paired tests find the outcomes
    _outcomes: dict = field(default_factory=dict, repr=False)

    def get(self, kind: str, name: str) -> dict | None:
        return self.files.get((kind, name))

    def outcomes(self, ref: Ref):
        """The row's per-user outcomes (pyarrow Table), or None when the file is absent."""
        if ref.key not in self._outcomes:
            f = None if self.data is None else \
                paths.rebase(paths.outcomes(ref.kind, self.dataset, ref.outcome_name()), self.data)
            self._outcomes[ref.key] = read_outcomes(f) if f is not None and f.exists() else None
        return self._outcomes[ref.key]


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


def _check_ci(m: dict, where: str) -> None:
    ci = m["ci"]
    if not isinstance(ci, dict):
        raise PipelineError(f"{where}: 'ci' should map '<protocol>/<metric>' to [low, high], got {type(ci).__name__}")
    for k, v in ci.items():
        if not (isinstance(v, list) and len(v) == 2 and all(_number(x) for x in v)):
            raise PipelineError(f"{where}: 'ci.{k}' is {v!r}, not [low, high]")


def _rerun(path: Path, kind: str) -> str:
    return "dvc repro " + PRODUCER[kind].format(ds=path.parent.name, name=path.stem)


def _check_scored(obj: dict, path: Path, kind: str, blocks: dict[str, dict]) -> None:
    """A scored row's file must be schema 2 with an interval block in every metrics block."""
    old = [where for where, b in blocks.items() if "ci" not in b]
    if obj.get("schema") != METRICS_SCHEMA or old:
        what = (f"'schema' is {obj.get('schema')!r}, not {METRICS_SCHEMA}" if obj.get("schema") != METRICS_SCHEMA
                else f"no intervals ('ci') in {', '.join(w.strip() or 'the top level' for w in old)}")
        raise PipelineError(f"{path}: old metrics format ({what}): the report needs the per-row intervals and"
                            f" per-user outcomes of the current evaluation; re-run `{_rerun(path, kind)}`")
    for where, b in blocks.items():
        _check_ci(b, f"{path}{where}")


def read_metrics(path: Path, kind: str) -> dict:
    """Parse one metrics file; anything malformed is a PipelineError that names the file."""
    try:
        obj = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise PipelineError(f"{path}: not a readable JSON metrics file ({e})") from e
    if kind in ("domain", "floors", "llm"):
        _check_metrics(obj, str(path))
        blocks = {"": obj}
        if kind != "llm" and "llm_users" in obj:
            _check_metrics(obj["llm_users"], f"{path} [llm_users]")
            blocks[" [llm_users]"] = obj["llm_users"]
        _check_scored(obj, path, kind, blocks)
    elif kind == "joint":
        _check_metrics(obj, str(path))
        for side in ("llm", "drs"):
            if side not in obj:
                raise PipelineError(f"{path}: joint metrics need an '{side}' block (keys: {sorted(obj)})")
            _check_metrics(obj[side], f"{path} [{side}]")
        if "lambda" in obj and not _number(obj["lambda"]):
            raise PipelineError(f"{path}: 'lambda' is {obj['lambda']!r}, not a number")
        _check_scored(obj, path, kind, {f" [{s}]": obj[s] for s in ("llm", "drs")})
    else:  # pretrain, sft, joint_train: training records
        if not isinstance(obj, dict):
            raise PipelineError(f"{path}: expected a JSON object, got {type(obj).__name__}")
        if "train_seconds" in obj and not _number(obj["train_seconds"]):
            raise PipelineError(f"{path}: 'train_seconds' is {obj['train_seconds']!r}, not a number")
        hist = obj.get("history", [])
        if not isinstance(hist, list) or not all(isinstance(h, dict) for h in hist):
            raise PipelineError(f"{path}: 'history' should be a list of {{step, loss, ...}} objects")
    return obj


def read_giveaway(path: Path) -> dict:
    """data/metrics/giveaway/<ds>.json (stage evaluate_floors), checked; errors name the file."""
    try:
        obj = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise PipelineError(f"{path}: not a readable JSON give-away check ({e})") from e
    if not isinstance(obj, dict):
        raise PipelineError(f"{path}: expected a JSON object, got {type(obj).__name__}")
    if not isinstance(obj.get("gives_away"), bool):
        raise PipelineError(f"{path}: 'gives_away' is {obj.get('gives_away')!r}, not true/false")
    if not isinstance(obj.get("flagged", []), list) or not all(isinstance(f, str) for f in obj.get("flagged", [])):
        raise PipelineError(f"{path}: 'flagged' should be a list of strings")
    rows = obj.get("rows", [])
    if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
        raise PipelineError(f"{path}: 'rows' should be a list of {{set, scorer, HR@1, low, high, chance}} objects")
    for i, r in enumerate(rows):
        bad = [k for k in ("HR@1", "low", "high", "chance") if not _number(r.get(k))]
        if bad:
            raise PipelineError(f"{path}: rows[{i}].{bad[0]} is {r.get(bad[0])!r}, not a number")
    return obj


def read_outcomes(path: Path):
    """One row's per-user outcomes (pipeline.eval.metrics.OUTCOME_SCHEMA); errors name the file."""
    import pyarrow.parquet as pq

    try:
        t = pq.read_table(path)
    except Exception as e:  # any unreadable file is the same user-facing error
        raise PipelineError(f"{path}: not a readable outcomes Parquet file ({e})") from e
    missing = [c for c in ("protocol", "uid", "rank") if c not in t.column_names]
    if missing:
        raise PipelineError(f"{path}: outcomes need columns protocol, uid, rank (missing {', '.join(missing)});"
                            " re-run the stage that scored this row")
    return t


def collect(data: Path, ds: str) -> Inputs:
    """Read data/metrics/<kind>/<ds>/*.json for every kind the report uses (absent folders are
    skipped), data/metrics/split/<ds>.json and data/metrics/giveaway/<ds>.json. The outcomes
    under data/outcomes/ are read when the paired tests need them."""
    inp = Inputs(ds, data=Path(data))
    for kind in KINDS:
        for f in sorted(paths.rebase(paths.metrics_dir(kind, ds), data).glob("*.json")):
            inp.files[(kind, f.stem)] = read_metrics(f, kind)
    split = paths.rebase(paths.metrics("split", ds), data)
    if split.exists():
        s = read_metrics(split, "split")
        inp.domain_users = s.get("evaluated_users", s.get("test", {}).get("interactions"))
    give = paths.rebase(paths.metrics("giveaway", ds), data)
    if give.exists():
        inp.giveaway = read_giveaway(give)
    return inp


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
    t = _table(inp, _with_floors(T3_BASELINES), T3_BDLM)
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


def scored_refs(inp: Inputs) -> list[Ref]:
    """A row for every scored file present: domain models, floors, SFT variants, joint sides."""
    refs = [Ref(DISPLAY.get(n, n), "domain", n) for (k, n) in inp.files if k == "domain"]
    refs += [Ref(FLOOR_DISPLAY.get(n, n), "floors", n) for (k, n) in inp.files if k == "floors"]
    refs += [Ref(f"LLM SFT {n}", "llm", n) for (k, n) in inp.files if k == "llm"]
    refs += [Ref(f"joint {n} ({s})", "joint", n, s) for (k, n) in inp.files if k == "joint" for s in ("llm", "drs")]
    return refs


def cao_table(inp: Inputs) -> dict:
    """Cao et al.'s protocols for every model, floor, variant and joint side that has any of them."""
    rows = [metric_row(inp, r, CAO_COLUMNS) for r in scored_refs(inp)]
    names = [f"{p}/{k}" for p, k in CAO_COLUMNS]
    rows = [r for r in rows if any(r[c] is not None for c in names)]
    return {"columns": names, "rows": rows, "users": users_summary(rows)}


def giveaway(inp: Inputs) -> dict:
    """The give-away check, as the report states it: flagged, or the text-only scorers within chance."""
    src = paths.metrics("giveaway", inp.dataset).as_posix()
    g = inp.giveaway
    if g is None:
        return {"present": False, "gives_away": None, "flagged": [], "source": src,
                "sentence": f"The give-away check has not run (`{src}` is missing:"
                            f" `dvc repro evaluate_floors@{inp.dataset}`)."}
    out = {"present": True, "gives_away": g["gives_away"], "flagged": list(g.get("flagged", [])), "source": src,
           "text_anchor": g.get("text_anchor"), "text_backend": g.get("text_backend")}
    if g["gives_away"]:
        out["sentence"] = ("**The candidate sets give the positive away: " + "; ".join(out["flagged"]) + ".**"
                           " A scorer that never sees the user beats chance on them, so no number measured on"
                           f" them means what it says (negatives.text_anchor: {g.get('text_anchor', '?')}).")
        return out
    ref = next((r for r in g.get("rows", []) if r.get("set") == "test_topk" and r.get("scorer") == "centrality"),
               None)
    quote = ("" if ref is None else
             f" (test top-K, title centrality: HR@1 {_num(ref['HR@1'])} [{_num(ref['low'])}, {_num(ref['high'])}],"
             f" chance {_num(ref['chance'])}, n={ref.get('users', '?')})")
    out["test_topk_centrality"] = ref
    out["sentence"] = ("The candidate sets do not give the positive away: the text-only scorers are within chance"
                       f"{quote}; `{src}`.")
    return out


# --------------------------------------------------------------------------------------
# Paired tests: two rows compared on the users both are scored on, from their per-user
# outcomes (McNemar on HR@k hits, paired bootstrap otherwise), Holm-adjusted per family.
# --------------------------------------------------------------------------------------
ALPHA = 0.05
FAMILIES = {"table3": "Table 3: BDLM vs the baselines", "ablation": "Ablation steps",
            "lambda": "λ sweep: each λ vs λ = 0", "vs_mostpop": "Every row vs MostPop",
            "vs_random": "Every row vs Random"}


@dataclass(frozen=True)
class Comparison:
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
    for r in _with_floors(T3_BASELINES) + T3_BDLM + ABLATION + T4_BASELINES + T4_BDLM + scored_refs(inp):
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
    return next((float(o["confidence"]) for o in inp.files.values() if _number(o.get("confidence"))
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


def md_paired_tests(pt: dict) -> list[str]:
    pct = round(100 * pt["confidence"])
    out = ["## Paired tests", "",
           ("Two rows compared on the same users: those both have per-user outcomes for (a domain model or"
           " floor is restricted to the LLM user subset, the users the LLM rows are scored on); n is their"
           f" number. diff = a - b with its {pct}% interval; HR@k: exact McNemar test on the per-user hits,"
           " other metrics: paired bootstrap over users. p (Holm) is adjusted within each family; a"
           f" difference is called significant only when p (Holm) < {_num(pt['alpha'], 2)}.")]
    for fam, title in FAMILIES.items():
        tests = pt["families"][fam]
        out += ["", f"### {title}", ""]
        if not tests:
            out.append("No comparison could be run (see the skipped list below).")
            continue
        out += ["| a | b | metric | n | diff [CI] | p | p (Holm) | verdict |", "|---|---|---|---|---|---|---|---|"]
        for x in tests:
            diff = "-" if x["diff"] is None else ("+" if x["diff"] > 0 else "") + _num(x["diff"])
            b = x["b"] + (f" ({x['note']})" if x.get("note") else "")
            out.append(f"| {x['a']} | {b} | {'top-K' if x['protocol'] == 'topk' else x['protocol']} {x['metric']} |"
                       f" {x['n']} | {diff}{_interval([x['low'], x['high']])} | {_p(x['p'])} | {_p(x['p_holm'])} |"
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


def _test(pt: dict, family: str, a: str, b: str) -> dict | None:
    return next((x for x in pt["families"][family] if x["a"] == a and x["b"] == b), None)


def _verdict(x: dict | None, want: str = "above") -> str:
    """supported (Holm-significant in the claimed direction), contradicted (significant the other
    way), not shown (not distinguishable from noise), or not measured."""
    if x is None or x["diff"] is None:
        return "not measured"
    if not x["significant"]:
        return "not shown"
    return "supported" if (x["diff"] > 0) == (want == "above") else "contradicted"


def _evidence(x: dict | None) -> str:
    if x is None or x["diff"] is None:
        return "-"
    return (f"{x['a']} − {x['b']}: {'+' if x['diff'] > 0 else ''}{_num(x['diff'])}{_interval([x['low'], x['high']])},"
            f" p (Holm) {_p(x['p_holm'])}, n {x['n']}")


def claims(pt: dict, curve: list[dict]) -> list[dict]:
    """Each BDLM claim of the paper, read off this run's paired tests (top-K HR@1): whether the
    run supports it. The ablation order is w/o ET ≈ w/o PE < w/o JL < BDLM, on each side."""
    out = []

    def add(claim: str, tests: list[dict | None], want: list[str]):
        verdicts = [_verdict(x, w) for x, w in zip(tests, want)]
        overall = ("supported" if all(v == "supported" for v in verdicts) else
                   "contradicted" if "contradicted" in verdicts else
                   "not measured" if all(v == "not measured" for v in verdicts) else "not shown")
        out.append({"claim": claim, "verdict": overall, "evidence": [_evidence(x) for x in tests if x is not None]})

    add("BDLM-drs > its domain model (LGCN)", [_test(pt, "table3", "BDLM-drs", "LGCN")], ["above"])
    add("BDLM-llm > LLM-only SFT", [_test(pt, "table3", "BDLM-llm", "LLM-only SFT")], ["above"])
    add("BDLM-llm > InstructRec-style (text-only SFT)",
        [_test(pt, "table3", "BDLM-llm", "InstructRec-style (text-only SFT)")], ["above"])
    for side in ("llm", "drs"):
        add(f"ablation order on the {side} side: BDLM > w/o JL > w/o PE, w/o ET",
            [_test(pt, "ablation", f"BDLM ({side})", f"w/o JL ({side})"),
             _test(pt, "ablation", f"w/o JL ({side})", f"w/o PE ({side})"),
             _test(pt, "ablation", f"w/o JL ({side})", f"w/o ET ({side})")], ["above"] * 3)
    lam = [x for x in pt["families"]["lambda"] if x["diff"] is not None]
    claim = "the λ curve rises above λ = 0 (and falls again at the largest λ)"
    if lam:
        best = max(lam, key=lambda x: x["diff"])
        evidence = [_evidence(best)]
        largest = max(p["lambda"] for p in curve)
        top = next((x for x in lam if x["a"].startswith(f"λ={largest:g} (")
                    and x["a"].endswith(best["a"][best["a"].index(" ("):])), None)
        if top is not None and top is not best:
            evidence.append(f"at λ={largest:g}: {'+' if top['diff'] > 0 else ''}{_num(top['diff'])} vs λ = 0")
        out.append({"claim": claim, "verdict": _verdict(best), "evidence": evidence})
    else:
        out.append({"claim": claim, "verdict": "not measured", "evidence": []})
    return out


def md_claims(rows: list[dict]) -> list[str]:
    out = ["## The paper's BDLM claims, on this run", "",
           "Each claim read off the paired tests below (top-K HR@1, Holm-adjusted within its family):"
           " supported = significant in the claimed direction; contradicted = significant the other way;"
           " not shown = not distinguishable from noise on these users; not measured = a row is missing.", "",
           "| claim | verdict | evidence |", "|---|---|---|"]
    out += [f"| {r['claim']} | **{r['verdict']}** | {'; '.join(r['evidence']) or '-'} |" for r in rows]
    return out


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
                        "final": final, "source": paths.metrics_of(kind, inp.dataset, name).as_posix()})
    return out


def expected_missing(inp: Inputs) -> list[str]:
    """Files a table row needs that are not there, in table order, without repeats."""
    refs = _with_floors(T3_BASELINES) + T3_BDLM + ABLATION + T4_BASELINES + T4_BDLM
    seen = []
    for r in refs:
        p = r.path(inp.dataset)
        if inp.get(r.kind, r.name) is None and p not in seen:
            seen.append(p)
    if inp.giveaway is None:
        seen.append(paths.metrics("giveaway", inp.dataset).as_posix())
    if not any(k == "joint" and n.startswith("lambda_") for k, n in inp.files):
        seen.append(f"{paths.metrics_dir('joint', inp.dataset).as_posix()}/lambda_<value>.json (lambda sweep)")
    return seen


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


def build_report(inp: Inputs, variants: list[str] = ()) -> dict:
    """Everything the report shows; `variants` (llm.variants) name the SFT loss plot's fields."""
    t3 = table3(inp)
    abl = ablation(inp)
    curve = lambda_curve(inp)
    pt = paired_tests(inp, t3, curve)
    return {"dataset": inp.dataset, "domain_users": inp.domain_users, "giveaway": giveaway(inp), "table3": t3,
            "ablation": abl, "table4": table4(inp), "lambda": curve, "cao": cao_table(inp),
            "paired_tests": pt, "claims": claims(pt, curve), "training": training(inp),
            "missing": expected_missing(inp),
            "plots": {"ablation": ablation_plot(abl), "lambda": lambda_plot(curve),
                      "sft_loss": sft_loss_plot(inp, list(variants)),
                      "learning_curve": learning_curve_plot(inp, list(variants))}}


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
    return (f" A constant \"Yes\" scores F1 {' / '.join(_num(f) for f in floors)} on these interaction sets"
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
