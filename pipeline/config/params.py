"""params.yaml access: each stage reads its own section; missing or mistyped keys are named.
load_params validates the whole file first (pipeline/config/sections.py). Also the one place for
parameter overrides: the dotted -S grammar, profiles, and the flow's params.yaml overrides for a run."""
from __future__ import annotations

import contextlib
import copy
import hashlib
import io
import json
import logging
import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError

from pipeline.config.sections import validate_params
from pipeline.errors import PipelineError

PARAMS_FILE = Path("params.yaml")

log = logging.getLogger(__name__)


def read_yaml(text: str):
    """YAML read as DVC reads params.yaml (ruamel, YAML 1.2): `no`, `off`, `yes` stay strings and
    1e-3 is a number. PyYAML's YAML 1.1 disagrees on both, and `dvc exp run -S` writes the file
    back in DVC's reading (a quoted "no" comes back as a bare no), so any other reader would see
    a different file from the one DVC tracks."""
    return YAML(typ="safe", pure=True).load(text)


def load_params(path: str | Path = PARAMS_FILE) -> dict[str, Any]:
    path = Path(path)
    if not path.exists():
        raise PipelineError(f"{path}: params file not found (run from the repository root)")
    try:
        params = read_yaml(path.read_text()) or {}
    except YAMLError as e:  # the file and the line, not a parser traceback
        mark = getattr(e, "problem_mark", None)
        where = f":{mark.line + 1}:{mark.column + 1}" if mark is not None else ""
        raise PipelineError(f"{path}{where}: not valid YAML ({getattr(e, 'problem', None) or e})") from None
    if not isinstance(params, dict):
        raise PipelineError(f"{path}: expected a mapping at the top level")
    validate_params(params, str(path))  # the whole file, once: types, ranges, unknown keys
    check_no_leftover_override(path)
    return params


# --- dotted overrides (the flow's -S, profiles/*.yaml): one way to apply them ---------------

def parse_overrides(overrides: dict[str, Any] | list[str] | None) -> dict[str, Any]:
    """{"section.key": value} or ["section.key=value", ...] (values parsed as YAML, like
    `dvc exp run -S`)."""
    if not overrides:
        return {}
    if isinstance(overrides, dict):
        items = overrides.items()
    else:
        items = []
        for o in overrides:
            if "=" not in o:
                raise PipelineError(f"override {o!r}: expected section.key=value")
            items.append(tuple(o.split("=", 1)))
    out = {}
    for key, value in items:
        if isinstance(value, str):
            try:
                value = read_yaml(value) if value.strip() else value
            except YAMLError:
                pass
        out[str(key).strip()] = value
    return out


def _type_name(v: Any) -> str:
    return "null" if v is None else type(v).__name__


def _same_kind(old: Any, new: Any) -> bool:
    if old is None or new is None:
        return True  # optional params (e.g. kcore.min_rating: null)
    if isinstance(old, bool) or isinstance(new, bool):
        return isinstance(old, bool) and isinstance(new, bool)
    if isinstance(old, float) and isinstance(new, int):
        return True
    for kind in (int, float, str, list, dict):
        if isinstance(old, kind):
            return isinstance(new, kind)
    return type(old) is type(new)


def apply_overrides(params: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """A copy of params with the overrides set; every key must exist and keep its type."""
    new = copy.deepcopy(params)
    errors = []
    for key, value in overrides.items():
        parts, node = key.split("."), new
        for i, part in enumerate(parts):
            if not isinstance(node, dict):
                errors.append(f"unknown param '{key}' (params.yaml has no section '{'.'.join(parts[:i])}' there)")
                break
            if part not in node:
                errors.append(f"unknown param '{key}' (params.yaml has no '{'.'.join(parts[:i + 1])}')")
                break
            if i == len(parts) - 1:
                if not _same_kind(node[part], value):
                    errors.append(f"param '{key}' is {_type_name(node[part])} ({node[part]!r}), "
                                  f"got {_type_name(value)} {value!r}")
                else:
                    node[part] = value
            else:
                node = node[part]
    if errors:
        raise PipelineError("; ".join(errors) + "; params.yaml left unchanged")
    return new


# --- flow overrides: the flow's -S values written into params.yaml for one run ----------------
# overridden_params writes them and puts the file back, recover_params restores the file after a
# kill -9, and every stage refuses a leftover (load_params -> check_no_leftover_override). The one
# place for overrides: the flow (pipeline/orchestration/flow.py) only calls into this module.

BACKUP_SUFFIX = ".flow-backup"  # the original params.yaml while a flow run's -S overrides are in place
RECORD_SUFFIX = ".flow-run"     # which process wrote them, and the sha256 of what it wrote


def override_files(path: Path) -> tuple[Path, Path]:
    return path.with_name(path.name + BACKUP_SUFFIX), path.with_name(path.name + RECORD_SUFFIX)


@dataclass(frozen=True)
class OverrideOwner:
    pid: int
    host: str
    written_sha256: str

    def running(self) -> bool:
        """True unless this is the host it ran on and the process is gone (a pid on another
        host sharing the checkout cannot be checked: assume it runs)."""
        if self.host != socket.gethostname():
            return True
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True


def write_override_record(path: Path, written_sha256: str) -> None:
    record = override_files(path)[1]
    record.write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                                  "written_sha256": written_sha256}) + "\n")


def override_owner(path: Path) -> OverrideOwner | None:
    record = override_files(path)[1]
    try:
        d = json.loads(record.read_text())
        return OverrideOwner(int(d["pid"]), str(d["host"]), str(d["written_sha256"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def check_no_leftover_override(path: Path) -> None:
    """A stage must not run on the -S values a killed flow run left in params.yaml (the next
    plain `dvc repro` used them silently). While the flow that wrote them runs, they are the
    values it asked for."""
    backup = override_files(path)[0]
    if not backup.exists():
        return
    owner = override_owner(path)
    if owner is not None and owner.running():
        return
    who = f"flow run pid {owner.pid}" if owner is not None else "a flow run"
    raise PipelineError(f"{path} still holds the -S overrides of {who}, which was interrupted; the original "
                        f"is in {backup}. Restore it with `python -m pipeline.orchestration.flow --restore-params` "
                        "(any flow run does it first)")


def _round_trip():
    """ruamel.yaml set up to write params.yaml back as it was written: comments, flow lists,
    2-space indents and `null` kept (PyYAML's dump stripped every comment)."""
    from ruamel.yaml import YAML

    y = YAML()
    y.preserve_quotes = True
    y.width = 4096
    y.indent(mapping=2, sequence=4, offset=2)
    y.representer.add_representer(type(None), lambda r, _: r.represent_scalar("tag:yaml.org,2002:null", "null"))
    return y


def _like(old: Any, value: Any) -> Any:
    """`value` as a ruamel node styled like the `old` one (flow or block, and the blank line
    or comment that trailed the old list)."""
    from ruamel.yaml.comments import CommentedMap, CommentedSeq

    if isinstance(value, list):
        new = CommentedSeq(value)
        if isinstance(old, CommentedSeq):
            if old.fa.flow_style():
                new.fa.set_flow_style()
            if len(old) and len(new) and (len(old) - 1) in old.ca.items:
                new.ca.items[len(new) - 1] = old.ca.items[len(old) - 1]
        return new
    if isinstance(value, dict):
        new = CommentedMap(value)
        if isinstance(old, CommentedMap) and old.fa.flow_style():
            new.fa.set_flow_style()
        return new
    return value


def render_overrides(text: str, overrides: dict[str, Any]) -> str:
    """params.yaml's text with the overrides set, every comment and untouched line kept."""
    y = _round_trip()
    doc = y.load(text)
    for key, value in overrides.items():
        *parents, last = key.split(".")
        node = doc
        for part in parents:
            node = node[part]
        node[last] = _like(node.get(last), value)
    buf = io.StringIO()
    y.dump(doc, buf)
    return buf.getvalue()


def recover_params(root: str | Path, logger: logging.Logger | logging.LoggerAdapter | None = None) -> None:
    """Put params.yaml back after a flow run that was killed (kill -9 skips its `finally`)
    with its -S overrides still in place. Restored only when params.yaml is exactly what that
    run wrote (or already the original); if someone edited it since, nothing is touched and the
    error says what to do. A run that is still alive is left alone (it restores the file; a
    gpu-deployment subflow of it runs on its overrides)."""
    path = Path(root) / PARAMS_FILE
    backup, record = override_files(path)
    if not backup.exists():
        record.unlink(missing_ok=True)  # a record without a backup is from a finished run
        return
    owner = override_owner(path)
    if owner is not None and owner.running():
        return  # not interrupted: that run restores params.yaml itself
    original, current = backup.read_bytes(), path.read_bytes() if path.exists() else b""
    written = owner.written_sha256 if owner is not None else None
    if current != original and hashlib.sha256(current).hexdigest() != written:
        raise PipelineError(f"{path} changed after an interrupted flow run wrote its overrides into it; the "
                            f"original waits in {backup}. Compare the two, keep what you want in {path.name}, "
                            f"then delete {backup.name}")
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(original)
    os.replace(tmp, path)
    backup.unlink()
    record.unlink(missing_ok=True)
    who = f"flow run pid {owner.pid}" if owner is not None else "a flow run"
    (logger or log).info(f"restored {path} from {backup.name}: {who} was interrupted with its -S overrides in place")


@contextlib.contextmanager
def overridden_params(root: str | Path, overrides: dict[str, Any],
                      logger: logging.Logger | logging.LoggerAdapter | None = None) -> Iterator[dict[str, Any]]:
    """params.yaml with the overrides for the duration of the run, then restored byte for
    byte. The original waits in params.yaml.flow-backup and params.yaml.flow-run records this
    process and what it wrote, so that after a kill -9 the next flow run restores it
    (recover_params) and stages refuse to run on the leftover values (load_params)."""
    recover_params(root, logger)
    path = Path(root) / PARAMS_FILE
    original = path.read_bytes()
    params = read_yaml(original.decode()) or {}
    new = apply_overrides(params, overrides)  # raises before anything is touched
    # the whole file as the stages will see it (names and the launcher become paths and shell
    # commands in dvc.yaml): checked before params.yaml is touched or DVC runs
    validate_params(new, "params.yaml" + (" with the -S/--datasets overrides" if overrides else ""))
    if not overrides:
        yield params
        return
    backup, record = override_files(path)
    if backup.exists():
        owner = override_owner(path)
        raise PipelineError(f"{backup} exists: flow run pid {owner.pid if owner else '?'} is running with its own "
                            f"overrides in {path.name}; wait for it to finish (it restores {path.name})")
    text = render_overrides(original.decode(), overrides).encode()
    if read_yaml(text.decode()) != new:  # the round trip must write exactly the validated params
        raise PipelineError(f"{path}: the overrides could not be written faithfully; params.yaml left unchanged")
    backup.write_bytes(original)
    write_override_record(path, hashlib.sha256(text).hexdigest())
    try:
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_bytes(text)
        os.replace(tmp, path)
        yield new
    finally:
        path.write_bytes(original)
        backup.unlink()
        record.unlink(missing_ok=True)


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
