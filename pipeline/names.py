"""Names are data: dataset, model, variant, experiment and mode names are checked against one
strict pattern before any path or command is built from them.

The pattern is ``^[a-z0-9][a-z0-9_-]{0,63}$``: lowercase letters, digits, ``_`` and ``-``,
starting with a letter or digit, at most 64 characters. Why each restriction:

- no ``/`` and no ``.``: a name is one path component, never ``..`` (path traversal: the name
  ``../local/x`` made download and prepare swap the user's own data/local/x for their output),
  never a hidden file, and never a dotted key (DVC reads ``llm.variant.${item.variant}`` as a
  dotted params path, so a dot in a name would break it);
- no spaces, quotes or shell metacharacters (``;|&$`()<>``): dvc.yaml puts names into `cmd:`
  lines that a shell runs;
- lowercase only: on a case-insensitive filesystem (macOS, Windows) ``ML`` and ``ml`` would
  share one output folder;
- a leading letter or digit: never an option (``-rf``) to a command.

Every default name (ml-100k, amazon-grocery, mf_rating, lambda_1e-3, no_aux, ...) fits.
"""
from __future__ import annotations

import re
from pathlib import Path

from pipeline.errors import PipelineError

NAME_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,63}$"
_NAME = re.compile(NAME_PATTERN)
RULE = ("lowercase letters, digits, '_' and '-', starting with a letter or digit, "
        "at most 64 characters (no '/', '.', spaces or shell characters)")


def is_name(value: object) -> bool:
    # fullmatch, not match: '$' would also accept a trailing newline
    return isinstance(value, str) and _NAME.fullmatch(value) is not None


def check_name(value: object, kind: str = "name", where: str = "") -> str:
    """`value` if it is a valid name, else a PipelineError naming `where`, the kind and the value."""
    if not is_name(value):
        prefix = f"{where}: " if where else ""
        raise PipelineError(f"{prefix}invalid {kind} {value!r}: a {kind} must be {RULE}")
    return value  # type: ignore[return-value]


def check_under(path: str | Path, root: str | Path, what: str = "output") -> Path:
    """`path` if it resolves strictly inside `root`, else a PipelineError. A last line of
    defence behind check_name: an output folder is swapped whole, so it must be where the
    pipeline's outputs live and nowhere else. Symlinks are followed up to the last component,
    not through it: a writer replaces a link, never what it points to (and DVC's symlink cache
    type makes outputs links into .dvc/cache)."""
    path = Path(path)
    resolved, top = path.parent.resolve() / path.name, Path(root).resolve()
    if resolved == top or top not in resolved.parents:
        raise PipelineError(f"{what} path {str(path)!r} resolves to {resolved}, outside {top}; refused")
    return Path(path)


# orchestration.launcher goes unquoted into the `cmd:` of sft and joint_train (it is several
# words), so it is held to a small grammar instead: a known launcher followed by options whose
# tokens use only characters no shell treats specially.
LAUNCHERS = (("python",), ("python3",), ("accelerate", "launch"), ("torchrun",), ("deepspeed",))
_TOKEN = re.compile(r"[A-Za-z0-9_./:,+=@%-]+")
_PY_RUNS = re.compile(r"-[A-Za-z]*[cm][A-Za-z]*")  # python -c / -m, also inside a cluster like -uc


def check_launcher(value: object, where: str = "params.yaml: orchestration.launcher") -> str:
    """`value` if it is `python`, `python3`, `accelerate launch`, `torchrun` or `deepspeed`
    followed by tokens of [A-Za-z0-9_./:,+=@%-] (e.g. `--config_file configs/x.yaml`)."""
    allowed = " | ".join(" ".join(words) for words in LAUNCHERS)
    if not isinstance(value, str):
        raise PipelineError(f"{where}: expected a string ({allowed} [--option value]...), got {value!r}")
    tokens = value.split(" ")
    head = next((words for words in LAUNCHERS if tuple(tokens[:len(words)]) == words), None)
    if head is None:
        raise PipelineError(f"{where}: {value!r} must start with one of: {allowed}")
    for tok in tokens[len(head):]:
        # split on single spaces: a tab, newline or doubled space would be an empty/odd token
        if not _TOKEN.fullmatch(tok):
            raise PipelineError(f"{where}: {value!r}: token {tok!r} is not allowed; launcher options may "
                                "use only letters, digits and _ . / : , + = @ % - (no spaces inside a token, "
                                "no quotes or shell characters such as ; | & $ ` ( ) < >)")
        # the command goes on with `-m stages.<stage>`: an earlier -m/-c would run something else
        if tok in ("-m", "-c", "--module") or (head[0].startswith("python") and _PY_RUNS.fullmatch(tok)):
            raise PipelineError(f"{where}: {value!r}: option {tok!r} would run other code than the stage; "
                                "the stage command adds `-m stages.<stage>` itself")
    return value

