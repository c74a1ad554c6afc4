"""The report as one dict: the tables, the λ sweep, the paired tests and claims, the plot data,
and the sections that are not tables (the give-away statement, the training records, the files
a table row needs that are missing). The dict is what report.json holds and markdown renders."""
from __future__ import annotations

from pipeline import paths
from pipeline.eval.report.claims import claims
from pipeline.eval.report.formatting import num
from pipeline.eval.report.inputs import Inputs, is_number_or_none
from pipeline.eval.report.lambda_sweep import lambda_curve
from pipeline.eval.report.paired_tests import paired_tests
from pipeline.eval.report.plots import ablation_plot, lambda_plot, learning_curve_plot, sft_loss_plot
from pipeline.eval.report.refs import ABLATION, T3_BASELINES, T3_BDLM, T4_BASELINES, T4_BDLM, with_floors
from pipeline.eval.report.tables import ablation, cao_table, table3, table4


def giveaway(inp: Inputs) -> dict:
    """The give-away check, as the report states it: flagged, or the text-only scorers within chance."""
    src = paths.metrics("giveaway", inp.dataset).as_posix()
    g = inp.giveaway
    if g is None:
        return {"present": False, "gives_away": None, "flagged": [], "source": src,
                "sentence": f"The give-away check has not run (`{src}` is missing:"
                            f" `dvc repro evaluate_floors@{inp.dataset}`)."}
    out = {"present": True, "gives_away": g["gives_away"], "flagged": list(g.get("flagged", [])), "source": src,
           "text_anchor": g.get("text_anchor"), "text_backend": g.get("text_backend")}
    if g["gives_away"]:
        out["sentence"] = ("**The candidate sets give the positive away: " + "; ".join(out["flagged"]) + ".**"
                           " A scorer that never sees the user beats chance on them, so no number measured on"
                           f" them means what it says (negatives.text_anchor: {g.get('text_anchor', '?')}).")
        return out
    ref = next((r for r in g.get("rows", []) if r.get("set") == "test_topk" and r.get("scorer") == "centrality"),
               None)
    quote = ("" if ref is None else
             f" (test top-K, title centrality: HR@1 {num(ref['HR@1'])} [{num(ref['low'])}, {num(ref['high'])}],"
             f" chance {num(ref['chance'])}, n={ref.get('users', '?')})")
    out["test_topk_centrality"] = ref
    out["sentence"] = ("The candidate sets do not give the positive away: the text-only scorers are within chance"
                       f"{quote}; `{src}`.")
    return out


def training(inp: Inputs) -> list[dict]:
    out = []
    for (kind, name), obj in sorted(inp.files.items()):
        if kind in ("pretrain", "sft", "joint_train"):
            hist = obj.get("history") or []
            final = {k: v for k, v in (hist[-1] if hist else {}).items()
                     if k not in ("step", "epoch", "lr") and isinstance(v, (int, float)) and not isinstance(v, bool)}
            last = final.get("loss", obj.get("final_loss"))
            out.append({"kind": kind, "name": name, "train_seconds": obj.get("train_seconds"),
                        "steps": len(hist) or None, "final_loss": last if is_number_or_none(last) else None,
                        "final": final, "source": paths.metrics_of(kind, inp.dataset, name).as_posix()})
    return out


def expected_missing(inp: Inputs) -> list[str]:
    """Files a table row needs that are not there, in table order, without repeats."""
    refs = with_floors(T3_BASELINES) + T3_BDLM + ABLATION + T4_BASELINES + T4_BDLM
    seen = []
    for r in refs:
        p = r.path(inp.dataset)
        if inp.get(r.kind, r.name) is None and p not in seen:
            seen.append(p)
    if inp.giveaway is None:
        seen.append(paths.metrics("giveaway", inp.dataset).as_posix())
    if not any(k == "joint" and n.startswith("lambda_") for k, n in inp.files):
        seen.append(f"{paths.metrics_dir('joint', inp.dataset).as_posix()}/lambda_<value>.json (lambda sweep)")
    return seen


def build_report(inp: Inputs, variants: list[str] = ()) -> dict:
    """Everything the report shows; `variants` (llm.variants) name the SFT loss plot's fields."""
    t3 = table3(inp)
    abl = ablation(inp)
    curve = lambda_curve(inp)
    pt = paired_tests(inp, t3, curve)
    return {"dataset": inp.dataset, "domain_users": inp.domain_users, "giveaway": giveaway(inp), "table3": t3,
            "ablation": abl, "table4": table4(inp), "lambda": curve, "cao": cao_table(inp),
            "paired_tests": pt, "claims": claims(pt, curve), "training": training(inp),
            "missing": expected_missing(inp),
            "plots": {"ablation": ablation_plot(abl), "lambda": lambda_plot(curve),
                      "sft_loss": sft_loss_plot(inp, list(variants)),
                      "learning_curve": learning_curve_plot(inp, list(variants))}}
