"""Exact staleness: every first-party module a stage's code imports is one of its DVC deps.

DVC re-runs a stage when one of its `deps` changes; a module the stage imports but does not
list can change its results without `dvc repro` noticing. For each stage in dvc.yaml the
modules its `cmd` runs (`python -m <module>`) are followed through their imports, read from
the source with `ast` (nothing is imported or executed): absolute and relative imports,
`from pkg import name` where name is a submodule, and the `__init__.py` of every package on
the way (importing `pipeline.llm.vocab` runs `pipeline/llm/__init__.py`). Only first-party
code under pipeline/ and stages/ counts. A dep covers a module when it is the module's file
or a folder above it (docs/design.md, "Orchestration").
"""
from __future__ import annotations

import ast
import re
import shlex
from pathlib import Path

import pytest
import yaml

from tests.helpers import REPO

FIRST_PARTY = ("pipeline", "stages")

# Modules that no stage lists and that cannot change a result: each entry says why. Keep it
# short; anything that reads params, data or numbers does not belong here.
# An allow-listed module is not followed: what it imports serves that role (pipeline.artifacts
# imports pipeline.data.download lazily, for the download cache's location only).
INFRASTRUCTURE = {
    "pipeline/__init__.py": "package docstring only",
    "stages/__init__.py": "package docstring only",
    "pipeline/llm/__init__.py": "package docstring only",
    "pipeline/models/__init__.py": "package docstring only",
    "pipeline/config/__init__.py": "package docstring only",
    "pipeline/data/__init__.py": "package docstring only",
    "pipeline/eval/__init__.py": "package docstring only",
    "pipeline/eval/report/__init__.py": "package docstring only",
    "pipeline/orchestration/__init__.py": "package docstring only",
    "pipeline/errors.py": "the exception type every stage raises; no computation",
    "pipeline/progress.py": "progress lines on stderr; writes no artifact",
    "pipeline/cli.py": "argument parsing and error printing; the arguments are the cmd DVC tracks",
    "pipeline/artifacts.py": "atomic file writes and JSON/Parquet I/O of values computed elsewhere",
    "pipeline/names.py": "validation of dataset/model names: accepts or refuses, never changes a value",
    "pipeline/paths.py": "where artifacts live; the paths themselves are the deps/outs DVC tracks",
    "pipeline/config/params.py": "reads params.yaml as DVC does; each stage's values are the `params` DVC tracks for it",
    "pipeline/config/sections.py": "validation only (accepts or refuses params.yaml, fills no value); check_params depends on it",
}

# Imports that are not followed, (importer, imported): each serves a path no stage but the one
# that lists the imported module takes.
NOT_FOLLOWED = {
    ("pipeline/llm/base.py", "pipeline/data/download.py"):
        "fetches a wheel-shipped LLM by asset name: download_llm alone does (and lists it); later stages load a path",
    ("pipeline/llm/base.py", "pipeline/data/sources.py"):
        "the asset names' pins, read only when a name (not a path) is loaded: download_llm, which lists it",
}


def module_file(module: str) -> Path | None:
    """The source of a first-party module (its __init__.py for a package), or None."""
    parts = module.split(".")
    if parts[0] not in FIRST_PARTY:
        return None
    base = REPO.joinpath(*parts)
    for f in (base.with_suffix(".py"), base / "__init__.py"):
        if f.is_file():
            return f
    return None


def _with_packages(module: str) -> list[str]:
    """`a.b.c` -> [a, a.b, a.b.c]: importing a submodule runs every package __init__ above it."""
    parts = module.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts) + 1)]


def imports_of(module: str) -> set[str]:
    """First-party modules `module` imports anywhere in its source (functions included)."""
    f = module_file(module)
    is_package = f.name == "__init__.py"
    package = module if is_package else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(f.read_text(), str(f))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                found.update(_with_packages(alias.name))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(anchor + ([node.module] if node.module else []))
            else:
                base = node.module
            found.update(_with_packages(base))
            for alias in node.names:  # `from pkg import sub` imports the submodule pkg.sub
                if module_file(f"{base}.{alias.name}") is not None:
                    found.add(f"{base}.{alias.name}")
    return {m for m in found if module_file(m) is not None}


def rel(module: str) -> str:
    return module_file(module).relative_to(REPO).as_posix()


def closure(roots: list[str], stop: set[str] = frozenset()) -> set[str]:
    """Every first-party module the roots import, directly or not; modules whose file is in
    `stop` are included but not followed."""
    seen: set[str] = set()
    todo = [m for r in roots for m in _with_packages(r)]
    while todo:
        m = todo.pop()
        if m in seen or module_file(m) is None:
            continue
        seen.add(m)
        if rel(m) not in stop:
            todo.extend(n for n in imports_of(m) if (rel(m), rel(n)) not in NOT_FOLLOWED)
    return seen


def entry_modules(cmd: str) -> list[str]:
    """The modules a stage command runs: every `-m <module>` (pipeline.orchestration.launch execs the stage)."""
    words = shlex.split(re.sub(r"\$\{[^}]*\}", "X", cmd))
    return [words[i + 1] for i, w in enumerate(words[:-1]) if w == "-m"]


def _strings(entries) -> list[str]:
    return [next(iter(e)) if isinstance(e, dict) else e for e in entries or []]


def stages() -> dict[str, dict]:
    """name -> stage body (the `do` of a foreach; a matrix stage is its own body)."""
    raw = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    return {name: body.get("do", body) for name, body in raw.items()}


def covered(rel: str, deps: list[str]) -> bool:
    return any(rel == d.rstrip("/") or rel.startswith(d.rstrip("/") + "/") for d in deps)


def uncovered(body: dict) -> list[str]:
    deps = _strings(body.get("deps"))
    files = sorted(rel(m) for m in closure(entry_modules(body["cmd"]), stop=set(INFRASTRUCTURE)))
    return [f for f in files if f not in INFRASTRUCTURE and not covered(f, deps)]


STAGES = stages()


@pytest.mark.parametrize("name", sorted(STAGES))
def test_stage_deps_cover_its_import_closure(name):
    body = STAGES[name]
    assert entry_modules(body["cmd"]), f"{name}: no `-m <module>` in its cmd: {body['cmd']}"
    missing = uncovered(body)
    assert not missing, (f"dvc.yaml stage '{name}' imports {missing} but does not list them in its deps: "
                         "add them (or a folder above them), or, for pure infrastructure, an entry with "
                         "its reason to INFRASTRUCTURE in tests/test_staleness.py")


def test_allow_list_is_real_and_unlisted():
    """Every allow-listed file exists (a renamed module must not leave a stale entry)."""
    for f in [*INFRASTRUCTURE, *(f for edge in NOT_FOLLOWED for f in edge)]:
        assert (REPO / f).is_file(), f"tests/test_staleness.py names {f}, which does not exist"
    for importer, imported in NOT_FOLLOWED:  # a stale entry (the import is gone) is an error too
        module = importer.removesuffix(".py").replace("/", ".")
        assert imported.removesuffix(".py").replace("/", ".") in imports_of(module), (importer, imported)


def test_closure_follows_relative_and_submodule_imports():
    """The walk itself: a package's own __init__ and `from pkg import submodule` are followed."""
    got = closure(["stages.joint_train"])
    assert {"pipeline", "pipeline.bdlm", "pipeline.bdlm.train", "pipeline.llm.vocab"} <= got
    assert closure(["pipeline.data.readers"]) >= {"pipeline.data.readers.amazon", "pipeline.data.readers.movielens"}


# ---------------------------------------------------------------- outputs: paths.py <-> dvc.yaml

SAMPLE = "ml-100k"


def declared_outs() -> list[str]:
    """Every outs/metrics/plots path of dvc.yaml, foreach/matrix expanded by DVC itself from params.yaml."""
    from dvc.repo import Repo

    with Repo(str(REPO)) as repo:
        return [str(o.def_path) for stage in repo.index.stages for o in stage.outs]


def output_paths(params: dict) -> dict[str, list]:
    """Each output path pipeline/paths.py builds for SAMPLE, by function, over the names params.yaml
    runs. Every public function of paths.py must appear here or in NOT_OUTPUTS."""
    from pipeline import paths

    domain, export = params["domain"]["models"], params["domain"]["export"]
    llm, joint = params["llm"], params["joint"]["experiments"]
    ds = SAMPLE
    return {
        "check_params": [paths.check_params()],
        "raw": [paths.raw(ds)], "prepared": [paths.prepared(ds)], "kcore": [paths.kcore(ds)],
        "split": [paths.split(ds)], "negatives": [paths.negatives(ds)],
        "metrics": [paths.metrics(s, ds) for s in ("prepare", "kcore", "split", "negatives", "prompts", "giveaway")],
        "metrics_dir": [paths.metrics_dir(k, ds) for k in ("domain", "floors", "pretrain", "llm", "sft", "joint",
                                                          "joint_train")],
        "domain": [paths.domain(ds, m) for m in domain],
        "metrics_pretrain": [paths.metrics_pretrain(ds, m) for m in domain],
        "metrics_domain": [paths.metrics_domain(ds, m) for m in domain],
        "metrics_of": [paths.metrics_of("llm", ds, v) for v in llm["variants"]],
        "embeddings": [paths.embeddings(ds, m) for m in export],
        "base_llm": [paths.base_llm()],
        "vocab_llm": [paths.vocab_llm(ds, m) for m in llm["vocab_modes"]],
        "prompts": [paths.prompts(ds, r) for r in ("tokens", "text")],
        "sft": [paths.sft(ds, v) for v in llm["variants"]],
        "metrics_llm": [paths.metrics_llm(ds, v) for v in llm["variants"]],
        "metrics_sft": [paths.metrics_sft(ds, v) for v in llm["variants"]],
        "joint": [paths.joint(ds, e) for e in joint],
        "metrics_joint": [paths.metrics_joint(ds, e) for e in joint],
        "metrics_joint_train": [paths.metrics_joint_train(ds, e) for e in joint],
        "outcomes": ([paths.outcomes("domain", ds, m) for m in domain]
                     + [paths.outcomes("floors", ds, f) for f in ("random", "centrality", "centrality_pop")]
                     + [paths.outcomes("llm", ds, v) for v in llm["variants"]]
                     + [paths.outcomes("joint", ds, f"{e}-{side}") for e in joint for side in ("llm", "drs")]),
        "metrics_floors": [paths.metrics_floors(ds, f) for f in ("random", "centrality", "centrality_pop")],
        "reports": [paths.reports(ds) / f for f in ("baselines.json", "baselines.md", "report.json", "report.md")],
        "report_plot": [paths.report_plot(c, ds) for c in ("ablation", "lambda", "sft_loss", "learning_curve")],
    }


# paths.py functions that name no stage output
NOT_OUTPUTS = {
    "local": "the user's own input files (data/local/, in git), read by download",
    "checkpoints": "resumable training state, removed when a run completes (not an artifact)",
    "rebase": "moves a path under another data folder (tests); builds no path of its own",
}


def test_every_output_path_of_paths_py_is_declared_in_dvc_yaml():
    from pipeline.eval import floors
    from pipeline import paths
    from pipeline.config.params import load_params

    params = load_params(REPO / "params.yaml")
    assert SAMPLE in params["datasets"]
    built = output_paths(params)
    public = {n for n, f in vars(paths).items() if callable(f) and not n.startswith("_")
              and getattr(f, "__module__", None) == paths.__name__}
    assert public - set(built) - set(NOT_OUTPUTS) == set(), "a paths.py function with no sample in output_paths"
    assert set(floors.FLOORS) == {"random", "centrality", "centrality_pop"}
    outs = declared_outs()
    undeclared = [(fn, p.as_posix()) for fn, ps in built.items() for p in ps
                  if not covered(p.as_posix(), outs) and not any(o.startswith(p.as_posix() + "/") for o in outs)]
    assert not undeclared, f"paths.py builds outputs no dvc.yaml stage declares: {undeclared}"


def _code_strings(tree: ast.AST) -> list[ast.Constant]:
    """String constants of a module that are not docstrings (f-string parts included)."""
    docs = {id(n.body[0].value) for n in ast.walk(tree)
            if isinstance(n, (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and n.body
            and isinstance(n.body[0], ast.Expr) and isinstance(n.body[0].value, ast.Constant)}
    return [n for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str) and id(n) not in docs]


@pytest.mark.parametrize("f", sorted(p.relative_to(REPO).as_posix() for p in (REPO / "stages").glob("*.py"))
                         + sorted(p.relative_to(REPO).as_posix() for p in (REPO / "pipeline/eval/report").glob("*.py")))
def test_stages_take_their_paths_from_paths_py(f):
    """No "data/..." literal and no "data" folder name in code: artifact paths come from pipeline/paths.py.
    Text that describes a pattern to the reader (with a `<placeholder>`) is not a path."""
    tree = ast.parse((REPO / f).read_text())
    bad = [(n.lineno, n.value) for n in _code_strings(tree) if n.value == "data" or n.value.startswith("data/")
           or "/data/" in n.value or re.search(r"\(data/", n.value) if "<" not in n.value]
    assert not bad, f"{f}: paths built by hand (use pipeline/paths.py): {bad}"
