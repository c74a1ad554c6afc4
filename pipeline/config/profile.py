"""Named parameter profiles: `profiles/<name>.yaml`, dotted params.yaml overrides applied with
`dvc exp run -S` (e.g. the paper-scale GPU run on ML-1M).

    python -m pipeline.config.profile                   # lists the profiles
    python -m pipeline.config.profile paper-ml1m        # prints the dvc exp run command
    python -m pipeline.config.profile paper-ml1m --run  # runs it

A profile is checked before anything runs: its name must exist, each key must be a dotted
params.yaml key, and params.yaml with the overrides applied must pass the config layer.
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
from pathlib import Path
from typing import Any

from pipeline.config.sections import validate_params
from pipeline.errors import PipelineError
from pipeline.names import check_name
from pipeline.config.params import apply_overrides, read_yaml

PROFILES = Path("profiles")


def available(folder: Path = PROFILES) -> list[str]:
    return sorted(p.stem for p in Path(folder).glob("*.yaml"))


def load(name: str, folder: Path = PROFILES) -> dict[str, Any]:
    """The profile's {dotted key: value}; an unknown name is named with the ones that exist."""
    have = available(folder)
    if name not in have:
        raise PipelineError(f"profile {name!r} does not exist: no {Path(folder) / (name + '.yaml')} "
                            f"(profiles: {', '.join(have) or 'none'})")
    check_name(name, "profile")
    doc = read_yaml((Path(folder) / f"{name}.yaml").read_text()) or {}
    if not isinstance(doc, dict) or not isinstance(doc.get("set"), dict) or not doc["set"]:
        raise PipelineError(f"{Path(folder) / (name + '.yaml')}: needs a non-empty `set:` mapping of dotted "
                            "params.yaml keys to values")
    return doc["set"]


def _hydra(value: Any) -> str:
    """A value in dvc's -S (Hydra override) grammar."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, list):
        return "[" + ",".join(_hydra(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ",".join(f"{k}:{_hydra(v)}" for k, v in value.items()) + "}"
    return json.dumps(str(value))  # quoted: spaces, colons, slashes stay one value


def command(name: str, params_file: Path = Path("params.yaml"), folder: Path = PROFILES) -> list[str]:
    """argv of `dvc exp run -S ...` for the profile, after validating the overridden params."""
    overrides = load(name, folder)
    where = f"{params_file} + profile {name}"
    try:
        params = apply_overrides(read_yaml(Path(params_file).read_text()), overrides)
    except PipelineError as e:
        raise PipelineError(f"{where}: {e}") from None
    validate_params(params, where)
    argv = ["dvc", "exp", "run", "--name", name]
    for key, value in overrides.items():
        argv += ["-S", f"{key}={_hydra(value)}"]
    return argv


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("profile", nargs="?")
    p.add_argument("--run", action="store_true", help="run the dvc exp run command instead of printing it")
    args = p.parse_args(argv)
    if not args.profile:
        print("\n".join(available()) or "no profiles in profiles/")
        return
    cmd = command(args.profile)
    if not args.run:
        print(shlex.join(cmd))
        return
    os.execvp(cmd[0], cmd)


if __name__ == "__main__":
    try:
        main()
    except PipelineError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
