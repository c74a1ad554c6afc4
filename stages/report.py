"""report: the paper-style report for one dataset, from whatever metrics files exist.

Reads data/metrics/{domain,floors,pretrain,llm,sft,joint,joint_train}/<ds>/*.json,
data/metrics/split/<ds>.json, data/metrics/giveaway/<ds>.json (the give-away check of the
candidate sets, stage evaluate_floors) and, for the paired tests, the per-user outcomes
data/outcomes/{domain,floors,llm,joint}/<ds>/*.parquet; writes data/reports/<ds>/report.{md,json}
(the give-away flag, BDLM Table 3, ablations, Table 4, the lambda sweep, Cao et al.'s protocols,
every cell with its interval and the floors as rows, paired tests with Holm-adjusted p-values,
training times, missing inputs) and the flat files that dvc.yaml's top-level `plots` render:
data/reports/plots/ablation/<ds>.json ([{variant, HR@1, f1}]) and
data/reports/plots/lambda/<ds>.json ([{lambda, HR@1 llm, HR@1 drs, f1 llm, f1 drs}]) and
data/reports/plots/sft_loss/<ds>.json ([{step, <variant>: loss, ...}], fields = llm.variants) and
data/reports/plots/learning_curve/<ds>.json ([{samples, <variant>: valid top-K HR@1, ...}]).
The plot files sit in one folder per chart (not under <ds>/) so that one top-level plot
definition covers every dataset.
A missing metrics or outcomes file is listed in the report, never an error; a malformed one
is, and so is a metrics file in the old format (no intervals): it names the stage to re-run.
"""
from __future__ import annotations

import logging
from pathlib import Path

from pipeline import paths
from pipeline.artifacts import atomic_path, write_json
from pipeline.cli import dataset_parser, run
from pipeline.config.params import get, load_params, section
from pipeline.eval.report.build import build_report
from pipeline.eval.report.inputs import collect
from pipeline.eval.report.markdown import markdown_report

log = logging.getLogger(__name__)


def plot_files(ds: str, data: Path = paths.DATA) -> dict[str, Path]:
    return {chart: paths.rebase(paths.report_plot(chart, ds), data)
            for chart in ("ablation", "lambda", "sft_loss", "learning_curve")}


def write_report(ds: str, variants: list[str], data: Path = paths.DATA) -> dict:
    rep = build_report(collect(data, ds), variants)
    out = paths.rebase(paths.reports(ds), data)
    files = plot_files(ds, data)
    for name, f in files.items():
        write_json(rep["plots"][name], f)
    links = {"ablation bar chart (x variant, y HR@1)": f"../plots/ablation/{ds}.json",
             "λ curves (x lambda, y HR@1 per side)": f"../plots/lambda/{ds}.json",
             "SFT loss curves (x step, y loss per variant)": f"../plots/sft_loss/{ds}.json",
             "SFT learning curves (x training samples, y valid top-K HR@1 per variant)":
                 f"../plots/learning_curve/{ds}.json"}
    write_json({k: v for k, v in rep.items() if k != "plots"}, out / "report.json")
    text = markdown_report(rep, links)
    with atomic_path(out / "report.md") as tmp:
        tmp.write_text(text)
    return rep


def main() -> None:
    args = dataset_parser(__doc__).parse_args()
    variants = get(section(load_params(args.params), "llm"), "variants", list, "llm")
    rep = write_report(args.dataset, variants)
    print((paths.reports(args.dataset) / "report.md").read_text())  # the report is the output (stdout)
    if rep["missing"]:
        log.info(f"[report] {len(rep['missing'])} input(s) missing, listed in the report")


if __name__ == "__main__":
    run(main)
