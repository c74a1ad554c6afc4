"""Ten bad inputs of issue #14 end to end, through the real stage command lines, on a copy.

    PYTHONPATH=. python benchmarks/bad_inputs_e2e.py /path/to/a/project/data

Copies the few files of ml-100k each case needs from that data/ folder into a temp project
(never writing the source; the base LLM is linked, read only), breaks one input per case (a
params copy passed with --params, a local file, an artifact), runs `python -m stages.<stage>`
there and prints, per case, the exit code, the message and whether every file under the temp
data/ is byte-identical afterwards (nothing overwritten, nothing half-written left).
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
DS = "ml-100k"


def snapshot(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and not p.is_symlink()}


def copy(src_data: Path, root: Path, *rel: str) -> None:
    for r in rel:
        src, dst = src_data / r, root / "data" / r
        dst.parent.mkdir(parents=True, exist_ok=True)
        (shutil.copytree if src.is_dir() else shutil.copy)(src, dst)


def params(root: Path, name: str, change) -> str:
    p = yaml.safe_load((REPO / "params.yaml").read_text())
    change(p)
    (root / name).write_text(yaml.safe_dump(p))
    return name


def set_key(*path, value):
    def change(p):
        d = p
        for k in path[:-1]:
            d = d[k]
        d[path[-1]] = value
    return change


def restamp(root: Path, rel: str) -> None:
    """Give a copied artifact from before lineage the record of today's id maps (as a re-run
    producer would write it), so the next case tests a *changed* id map, not a missing record."""
    from pipeline import lineage

    f = root / "data" / rel
    f.write_text(json.dumps(lineage.stamp(json.loads(f.read_text()), DS), indent=2, sort_keys=True) + "\n")


def main() -> int:
    src = Path(sys.argv[1]).resolve()
    root = Path(tempfile.mkdtemp(prefix="bad-inputs-e2e-"))
    os.chdir(root)
    shutil.copy(REPO / "params.yaml", root / "params.yaml")
    copy(src, root, f"raw/{DS}", f"kcore/{DS}", f"split/{DS}", f"domain/{DS}/mf", f"domain/{DS}/lightgcn",
         f"embeddings/{DS}/lightgcn.safetensors", f"llm/{DS}/sft/full/variant.json")
    (root / "data/llm").mkdir(parents=True, exist_ok=True)
    os.symlink(src / "llm/base", root / "data/llm/base")  # read only: 0.5 GB not copied
    mine = root / "data/local/mine"
    mine.mkdir(parents=True)
    shutil.copy(REPO / "tests/fixtures/local/items.csv", mine / "items.csv")
    (mine / "interactions.csv").write_text("user_id,item_id,rating,timestamp\nu1,i1,5,1\n,i2,4,2\n")

    def nan_embeddings():
        from pipeline import lineage
        from pipeline.artifacts import read_safetensors, write_safetensors
        f = root / "data/embeddings" / DS / "lightgcn.safetensors"
        tables, meta = read_safetensors(f)
        tables["item"][7, 3] = float("nan")
        write_safetensors(tables, f, lineage.stamp(meta, DS, text=True))

    def truncate_raw():
        f = root / "data/raw" / DS / "ml-100k.inter"
        f.write_bytes(f.read_bytes()[:-40])

    def retag_items():
        import pyarrow.parquet as pq
        restamp(root, f"domain/{DS}/lightgcn/config.json")
        restamp(root, f"llm/{DS}/sft/full/variant.json")
        f = root / "data/kcore" / DS / "items.parquet"
        t = pq.read_table(f)
        order = list(range(1, t.num_rows)) + [0]  # the same items, other dense ids
        pq.write_table(t.set_column(t.schema.get_field_index("iid"), "iid", t["iid"].take(order)), f)

    cases = [
        ("1 path traversal in a dataset name", None, ["stages.prepare", "../local/mine"]),
        ("2 shell injection through params.yaml", None,
         ["stages.check_params", "--params", params(root, "p2.yaml", set_key("datasets", value=["x;touch /tmp/pwned"]))]),
        ("3 empty user id in a local CSV", None, ["stages.download", "mine"], ["stages.prepare", "mine"]),
        ("4 popularity_alpha that overflows", None,
         ["stages.negatives", DS, "--params", params(root, "p4.yaml", set_key("negatives", "popularity_alpha", value=120))]),
        ("5 misspelt key kcore.min_ratings", None,
         ["stages.kcore", DS, "--params", params(root, "p5.yaml", lambda p: p["kcore"].update(min_ratings=4))]),
        ("6 domain.train.epochs: 0", None,
         ["stages.pretrain_domain", DS, "mf", "--params", params(root, "p6.yaml", set_key("domain", "train", "epochs", value=0))]),
        ("7 a NaN in the exported embeddings", nan_embeddings, ["stages.expand_vocab", DS, "pe"]),
        ("8 a raw file cut short since download", truncate_raw, ["stages.prepare", DS]),
        ("9 a domain checkpoint from before lineage (the real one)", None, ["stages.export_embeddings", DS, "lightgcn"]),
        ("10 an id map changed under a domain checkpoint", retag_items, ["stages.export_embeddings", DS, "lightgcn"]),
        ("11 an id map changed under an SFT model", None, ["stages.evaluate_llm", DS, "full"]),
    ]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "2"}
    for title, prepare, *commands in cases:
        if prepare:
            prepare()
        for cmd in commands:
            before = snapshot(root / "data")
            r = subprocess.run([sys.executable, "-m", *cmd], cwd=root, env=env, capture_output=True, text=True,
                               timeout=600)
            last = [line for line in r.stderr.splitlines() if "error:" in line or line.startswith("  ")]
            same = snapshot(root / "data") == before
            print(f"## {title}\n$ python -m {' '.join(cmd)}\nexit {r.returncode}; data/ unchanged: {same}")
            print("\n".join(last) if last else r.stderr[-800:])
            print()
    print(f"(temp project: {root}; /tmp/pwned exists: {Path('/tmp/pwned').exists()})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
