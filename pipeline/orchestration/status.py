"""Pipeline status: every expanded DVC stage, whether it is up to date (`dvc status --json`)
and its last metrics (the metrics files dvc.yaml declares for it), as a table.

    python -m pipeline.orchestration.status                 # every stage
    python -m pipeline.orchestration.status --stages kcore negatives --all-metrics
"""
from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from pipeline.errors import PipelineError


def dvc_status(root: str | Path = ".") -> dict[str, Any]:
    env = {**os.environ, "DVC_NO_ANALYTICS": "1"}
    res = subprocess.run([sys.executable, "-m", "dvc", "status", "--json"], cwd=root, env=env,
                         capture_output=True, text=True)
    if res.returncode != 0:
        raise PipelineError(f"dvc status failed: {res.stderr.strip() or res.stdout.strip()}")
    out = res.stdout.strip()
    return json.loads(out[out.find("{"):]) if "{" in out else {}


def describe(changes: list[Any]) -> str:
    """'up to date' or what changed, e.g. 'changed: params, deps'."""
    if not changes:
        return "up to date"
    kinds: list[str] = []
    for c in changes:
        if isinstance(c, str):  # "always changed", "changed checksum"
            kinds.append(c)
            continue
        for key, val in c.items():
            word = key.replace("changed ", "")
            if word == "deps" and isinstance(val, dict):  # params files map to {param: change}
                kinds += ["params" if isinstance(v, dict) else "deps" for v in val.values()]
                continue
            if word == "outs" and isinstance(val, dict) and all(v in ("deleted", "not in cache") for v in val.values()):
                word = "outs missing"
            kinds.append(word)
    return "changed: " + ", ".join(dict.fromkeys(kinds))


def flatten(obj: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(obj, dict):
        out: dict[str, Any] = {}
        for k, v in obj.items():
            out.update(flatten(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    return {prefix: obj} if isinstance(obj, (int, float, str, bool)) or obj is None else {}


def fmt(v: Any) -> str:
    if isinstance(v, float):
        return "nan" if math.isnan(v) else f"{v:.4g}"
    return str(v)


def stage_metrics(root: Path, paths: list[str], limit: int | None) -> str:
    parts = []
    for p in paths:
        f = root / p
        if not f.exists():
            parts.append(f"({p}: none yet)")
            continue
        try:
            flat = {k: v for k, v in flatten(json.loads(f.read_text())).items() if not isinstance(v, str)}
        except (json.JSONDecodeError, UnicodeDecodeError):
            parts.append(f"({p}: unreadable)")
            continue
        items = list(flat.items())
        shown = items if limit is None else items[:limit]
        text = " ".join(f"{k}={fmt(v)}" for k, v in shown)
        parts.append(text + (f" (+{len(items) - len(shown)} more)" if len(shown) < len(items) else ""))
    return "; ".join(parts)


def rows(root: str | Path = ".", stages: list[str] | None = None, limit: int | None = 4) -> list[tuple[str, str, str]]:
    from dvc.repo import Repo

    from pipeline.orchestration.dag import check_stage_names, load_dag, stage_names

    root = Path(root)
    check_stage_names(stages or [], stage_names(root))
    dag = load_dag(root)
    with Repo(str(root)) as repo:
        metrics = {s.name: [str(Path(o.fs_path).relative_to(root.resolve())) for o in s.outs if o.metric]
                   for s in repo.index.stages}
    status = dvc_status(root)
    out = []
    for group in dag.select(stages):
        for name in dag.members[group]:
            state = describe(status[name]) if name in status else "up to date"
            out.append((name, state, stage_metrics(root, metrics.get(name, []), limit)))
    return out


def table(data: list[tuple[str, ...]], header: tuple[str, ...], width: int | None = None) -> str:
    widths = [max(len(r[i]) for r in [header, *data]) for i in range(len(header) - 1)]
    lines = []
    for r in [header, tuple("-" * len(h) for h in header), *data]:
        line = "  ".join(c.ljust(w) for c, w in zip(r, widths)) + "  " + r[-1]
        lines.append(line if width is None or len(line) <= width else line[:width - 3] + "...")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m pipeline.orchestration.status", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--stages", nargs="+", metavar="STAGE", help="only these stage names (default: all)")
    p.add_argument("--root", default=".", help="DVC project directory (default: .)")
    p.add_argument("--all-metrics", action="store_true", help="every metric, not the first 4 per file")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    args = p.parse_args(argv)
    try:
        data = rows(args.root, args.stages, None if args.all_metrics or args.json else 4)
    except PipelineError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps([dict(zip(("stage", "status", "metrics"), r)) for r in data], indent=1))
        return 0
    import shutil

    width = None if args.all_metrics or not sys.stdout.isatty() else shutil.get_terminal_size().columns
    print(table(data, ("stage", "status", "last metrics"), width))
    stale = sum(r[1] != "up to date" for r in data)
    print(f"\n{len(data)} stages, {stale} not up to date" + (" (run `dvc repro` or `python -m pipeline.orchestration.flow`)" if stale else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
