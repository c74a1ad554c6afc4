"""params.yaml access: each stage reads its own section; missing or mistyped keys are named.
load_params validates the whole file first (pipeline/config.py)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from pipeline.config import validate_params
from pipeline.errors import PipelineError

PARAMS_FILE = Path("params.yaml")


def load_params(path: str | Path = PARAMS_FILE) -> dict[str, Any]:
    path = Path(path)
    if not path.exists():
        raise PipelineError(f"{path}: params file not found (run from the repository root)")
    try:
        with open(path) as f:
            params = yaml.safe_load(f) or {}
    except yaml.YAMLError as e:  # the file and the line, not a PyYAML traceback
        mark = getattr(e, "problem_mark", None)
        where = f":{mark.line + 1}:{mark.column + 1}" if mark is not None else ""
        raise PipelineError(f"{path}{where}: not valid YAML ({getattr(e, 'problem', None) or e})") from None
    if not isinstance(params, dict):
        raise PipelineError(f"{path}: expected a mapping at the top level")
    validate_params(params, str(path))  # the whole file, once: types, ranges, unknown keys
    return params


def section(params: dict[str, Any], name: str) -> dict[str, Any]:
    if name not in params or not isinstance(params[name], dict):
        raise PipelineError(f"params.yaml: missing section '{name}'")
    return params[name]


def get(sec: dict[str, Any], key: str, typ: type | tuple[type, ...], where: str) -> Any:
    """sec[key] checked against `typ`; `where` is the section name used in the message."""
    if key not in sec:
        raise PipelineError(f"params.yaml: missing param '{where}.{key}'")
    value = sec[key]
    # bool is an int in Python; a flag where a number is expected is a mistake.
    if isinstance(value, bool) and bool not in (typ if isinstance(typ, tuple) else (typ,)):
        raise PipelineError(f"params.yaml: '{where}.{key}' must be {_names(typ)}, got {value!r}")
    if not isinstance(value, typ):
        raise PipelineError(f"params.yaml: '{where}.{key}' must be {_names(typ)}, got {value!r}")
    return value


def _names(typ: type | tuple[type, ...]) -> str:
    types = typ if isinstance(typ, tuple) else (typ,)
    return " or ".join("null" if t is type(None) else t.__name__ for t in types)
