"""Where each table row comes from: a Ref names one metrics file (a domain model, a floor, an
SFT variant, or one side of a joint experiment) and its per-user outcomes; the lists here are the
rows of BDLM Table 3, the ablations and Table 4, and the display names of the domain models and
floors that both the baseline table and the report use."""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from pipeline import paths

if TYPE_CHECKING:  # annotation only: inputs imports this module
    from pipeline.eval.report.inputs import Inputs

# How BDLM's Table 3 names the domain models.
DISPLAY = {"ncf": "NCF", "gmf": "GMF", "sasrec": "SASRec", "gru4rec": "GRU4Rec", "bert4rec": "BERT4Rec",
           "lightgcn": "LGCN", "mf": "MF (BPR)", "mostpop": "MostPop", "itemknn": "ItemKNN",
           "mf_rating": "MF (rating)"}
# The user-agnostic floors (pipeline.eval.floors.FLOORS), as the tables name them.
FLOOR_DISPLAY = {"random": "Random", "centrality": "Centrality (title)", "centrality_pop": "Centrality + pop."}


@dataclass(frozen=True)
class Ref:
    """One row's source: a domain model, a floor, an SFT variant, or one side of a joint experiment."""
    label: str
    kind: str                 # domain | floors | llm | joint
    name: str                 # model / floor / variant / experiment
    side: str | None = None   # joint only: llm | drs

    def path(self, ds: str) -> str:
        return paths.metrics_of(self.kind, ds, self.name).as_posix()

    def outcome_name(self) -> str:
        return f"{self.name}-{self.side}" if self.kind == "joint" else self.name

    def outcome_path(self, ds: str) -> str:
        """data/outcomes/<kind>/<ds>/<name>.parquet (joint: <experiment>-<side>), as paths.outcomes."""
        return paths.outcomes(self.kind, ds, self.outcome_name()).as_posix()

    @property
    def key(self) -> tuple:
        return (self.kind, self.name, self.side)


FLOOR_ROWS = [Ref("Random", "floors", "random"), Ref("Centrality (title)", "floors", "centrality"),
              Ref("Centrality + pop.", "floors", "centrality_pop")]
MOSTPOP = Ref("MostPop", "domain", "mostpop")
RANDOM = FLOOR_ROWS[0]
# Rows of BDLM Table 3. InstructRec is text-only instruction tuning: its row here is our SFT
# with ids as plain text (variant no_et); LLM-only SFT is BDLM's pre-loaded tokens + aux tasks
# with no mutual learning. LLM-Rec and GPT4SM are not reproduced. The floors sit beside MostPop.
INSTRUCTREC = Ref("InstructRec-style (text-only SFT)", "llm", "no_et")
LLM_ONLY = Ref("LLM-only SFT", "llm", "full")
T3_BASELINES = [Ref("NCF", "domain", "ncf"), Ref("GMF", "domain", "gmf"), Ref("SASRec", "domain", "sasrec"),
                Ref("GRU4Rec", "domain", "gru4rec"), Ref("BERT4Rec", "domain", "bert4rec"),
                Ref("LGCN", "domain", "lightgcn"), MOSTPOP,
                Ref("ItemKNN", "domain", "itemknn"), INSTRUCTREC, LLM_ONLY]
T3_BDLM = [Ref("BDLM-llm", "joint", "bdlm", "llm"), Ref("BDLM-drs", "joint", "bdlm", "drs")]
# Ablations: four joint experiments through one trainer and one budget (each changes one
# thing: lambda = 0, random token rows, ids as text), read on both sides; then the SFT rows
# (LLM-only SFT beside Cao et al.'s w/o aux and the randomly initialised tokens' w/o PE).
ABLATION_STEPS = [("BDLM", "bdlm"), ("w/o JL", "wo_jl"), ("w/o PE", "wo_pe"), ("w/o ET", "wo_et")]
ABLATION = ([Ref(f"{label} ({side})", "joint", name, side) for side in ("llm", "drs") for label, name in ABLATION_STEPS]
            + [LLM_ONLY, Ref("w/o aux (SFT)", "llm", "no_aux"), Ref("w/o PE (SFT)", "llm", "no_pe"),
               Ref("+ align loss (SFT, an option)", "llm", "align")])
# BDLM Table 4: BDLM with NCF as the domain model.
T4_BASELINES = [Ref("NCF", "domain", "ncf")]
T4_BDLM = [Ref("BDLM-NCF-llm", "joint", "ncf", "llm"), Ref("BDLM-NCF-drs", "joint", "ncf", "drs")]


def with_floors(refs: list[Ref]) -> list[Ref]:
    """refs with the floor rows right after MostPop (at the end when MostPop is not there)."""
    at = next((i + 1 for i, r in enumerate(refs) if r == MOSTPOP), len(refs))
    return refs[:at] + FLOOR_ROWS + refs[at:]


def scored_refs(inp: Inputs) -> list[Ref]:
    """A row for every scored file present: domain models, floors, SFT variants, joint sides."""
    refs = [Ref(DISPLAY.get(n, n), "domain", n) for (k, n) in inp.files if k == "domain"]
    refs += [Ref(FLOOR_DISPLAY.get(n, n), "floors", n) for (k, n) in inp.files if k == "floors"]
    refs += [Ref(f"LLM SFT {n}", "llm", n) for (k, n) in inp.files if k == "llm"]
    refs += [Ref(f"joint {n} ({s})", "joint", n, s) for (k, n) in inp.files if k == "joint" for s in ("llm", "drs")]
    return refs
