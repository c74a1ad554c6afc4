"""Reading the report's inputs: every metrics file of a dataset (data/metrics/<kind>/<ds>/), the
split summary, the give-away check and, on demand, the per-user outcomes, each checked as it is
read. A malformed file, or a scored file in the old format (no intervals), is a PipelineError that
names the file and the stage to re-run."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from pipeline import paths
from pipeline.errors import PipelineError
from pipeline.eval.report.refs import Ref

# The metrics-file schema the tables need: pipeline.eval.evaluator.METRICS_SCHEMA (not imported:
# that module pulls in torch, which the report has no use for). Older files have no "ci".
METRICS_SCHEMA = 2

# Metrics folders the report reads, data/metrics/<kind>/<dataset>/<name>.json.
KINDS = ("domain", "floors", "pretrain", "llm", "sft", "joint", "joint_train")
# The protocol sections a metrics block may carry.
PROTOCOLS = ("topk", "binary", "retrieval", "retrieval_unmasked", "ranking", "rating")

# The stage that writes each kind of scored file (dvc.yaml), named in "re-run" messages.
PRODUCER = {"domain": "evaluate_domain@{ds}-{name}", "floors": "evaluate_floors@{ds}",
            "llm": "evaluate_llm@{ds}-{name}", "joint": "evaluate_joint@{ds}-{name}"}


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


def is_number_or_none(v) -> bool:
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
        bad = [k for k, v in sec.items() if not is_number_or_none(v)]
        if bad:
            raise PipelineError(f"{where}: '{proto}.{bad[0]}' is {sec[bad[0]]!r}, not a number")
    if "users_scored" in m and not (isinstance(m["users_scored"], int) and not isinstance(m["users_scored"], bool)):
        raise PipelineError(f"{where}: 'users_scored' is {m['users_scored']!r}, not an integer")


def _check_ci(m: dict, where: str) -> None:
    ci = m["ci"]
    if not isinstance(ci, dict):
        raise PipelineError(f"{where}: 'ci' should map '<protocol>/<metric>' to [low, high], got {type(ci).__name__}")
    for k, v in ci.items():
        if not (isinstance(v, list) and len(v) == 2 and all(is_number_or_none(x) for x in v)):
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
        if "lambda" in obj and not is_number_or_none(obj["lambda"]):
            raise PipelineError(f"{path}: 'lambda' is {obj['lambda']!r}, not a number")
        _check_scored(obj, path, kind, {f" [{s}]": obj[s] for s in ("llm", "drs")})
    else:  # pretrain, sft, joint_train: training records
        if not isinstance(obj, dict):
            raise PipelineError(f"{path}: expected a JSON object, got {type(obj).__name__}")
        if "train_seconds" in obj and not is_number_or_none(obj["train_seconds"]):
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
        bad = [k for k in ("HR@1", "low", "high", "chance") if not is_number_or_none(r.get(k))]
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
