"""Print our dataset statistics next to the BDLM paper's Table 1 (run after `dvc repro`).

    python benchmarks/table1_stats.py ml-1m
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline import paths  # noqa: E402

# BDLM, Table 1: #users, #items, #interactions, sparsity
PAPER_TABLE1 = {
    "ml-1m": (6_040, 3_952, 1_000_224, 0.958),
    "amazon-grocery": (3_472, 7_171, 76_592, 0.997),
    "amazon-health": (4_872, 7_934, 107_135, 0.997),
}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("datasets", nargs="+")
    args = p.parse_args()
    print(f"{'dataset':<16}{'source':<22}{'#users':>9}{'#items':>9}{'#interactions':>15}{'sparsity':>10}")
    for ds in args.datasets:
        if ds in PAPER_TABLE1:
            u, i, n, s = PAPER_TABLE1[ds]
            print(f"{ds:<16}{'BDLM Table 1':<22}{u:>9,}{i:>9,}{n:>15,}{s:>10.3f}")
        for stage, label in (("prepare", "ours, raw"), ("kcore", "ours, after k-core")):
            f = paths.metrics(stage, ds)
            if not f.exists():
                print(f"{ds:<16}{label:<22}  (missing {f}: run dvc repro)")
                continue
            m = json.loads(f.read_text())
            sparsity = m.get("sparsity", 1 - m["interactions"] / (m["users"] * m["items"]))
            print(f"{ds:<16}{label:<22}{m['users']:>9,}{m['items']:>9,}{m['interactions']:>15,}{sparsity:>10.3f}")


if __name__ == "__main__":
    main()
