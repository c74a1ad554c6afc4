"""The paper's BDLM claims, each read off this run's paired tests (top-K HR@1, Holm-adjusted):
supported, contradicted, not shown or not measured, with the evidence that says so."""
from __future__ import annotations

from pipeline.eval.report.formatting import interval, num, p_cell


def _test(pt: dict, family: str, a: str, b: str) -> dict | None:
    return next((x for x in pt["families"][family] if x["a"] == a and x["b"] == b), None)


def _verdict(x: dict | None, want: str = "above") -> str:
    """supported (Holm-significant in the claimed direction), contradicted (significant the other
    way), not shown (not distinguishable from noise), or not measured."""
    if x is None or x["diff"] is None:
        return "not measured"
    if not x["significant"]:
        return "not shown"
    return "supported" if (x["diff"] > 0) == (want == "above") else "contradicted"


def _evidence(x: dict | None) -> str:
    if x is None or x["diff"] is None:
        return "-"
    return (f"{x['a']} − {x['b']}: {'+' if x['diff'] > 0 else ''}{num(x['diff'])}{interval([x['low'], x['high']])},"
            f" p (Holm) {p_cell(x['p_holm'])}, n {x['n']}")


def claims(pt: dict, curve: list[dict]) -> list[dict]:
    """Each BDLM claim of the paper, read off this run's paired tests (top-K HR@1): whether the
    run supports it. The ablation order is w/o ET ≈ w/o PE < w/o JL < BDLM, on each side."""
    out = []

    def add(claim: str, tests: list[dict | None], want: list[str]):
        verdicts = [_verdict(x, w) for x, w in zip(tests, want)]
        overall = ("supported" if all(v == "supported" for v in verdicts) else
                   "contradicted" if "contradicted" in verdicts else
                   "not measured" if all(v == "not measured" for v in verdicts) else "not shown")
        out.append({"claim": claim, "verdict": overall, "evidence": [_evidence(x) for x in tests if x is not None]})

    add("BDLM-drs > its domain model (LGCN)", [_test(pt, "table3", "BDLM-drs", "LGCN")], ["above"])
    add("BDLM-llm > LLM-only SFT", [_test(pt, "table3", "BDLM-llm", "LLM-only SFT")], ["above"])
    add("BDLM-llm > InstructRec-style (text-only SFT)",
        [_test(pt, "table3", "BDLM-llm", "InstructRec-style (text-only SFT)")], ["above"])
    for side in ("llm", "drs"):
        add(f"ablation order on the {side} side: BDLM > w/o JL > w/o PE, w/o ET",
            [_test(pt, "ablation", f"BDLM ({side})", f"w/o JL ({side})"),
             _test(pt, "ablation", f"w/o JL ({side})", f"w/o PE ({side})"),
             _test(pt, "ablation", f"w/o JL ({side})", f"w/o ET ({side})")], ["above"] * 3)
    lam = [x for x in pt["families"]["lambda"] if x["diff"] is not None]
    claim = "the λ curve rises above λ = 0 (and falls again at the largest λ)"
    if lam:
        best = max(lam, key=lambda x: x["diff"])
        evidence = [_evidence(best)]
        largest = max(p["lambda"] for p in curve)
        top = next((x for x in lam if x["a"].startswith(f"λ={largest:g} (")
                    and x["a"].endswith(best["a"][best["a"].index(" ("):])), None)
        if top is not None and top is not best:
            evidence.append(f"at λ={largest:g}: {'+' if top['diff'] > 0 else ''}{num(top['diff'])} vs λ = 0")
        out.append({"claim": claim, "verdict": _verdict(best), "evidence": evidence})
    else:
        out.append({"claim": claim, "verdict": "not measured", "evidence": []})
    return out
