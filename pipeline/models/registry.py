"""Model names (as written in params.yaml) -> classes."""
from __future__ import annotations

from pipeline.errors import PipelineError
from pipeline.models.base import DomainModel
from pipeline.models.collaborative import GMF, MF, LightGCN, MFRating, NeuMF
from pipeline.models.sequential import BERT4Rec, GRU4Rec, SASRec
from pipeline.models.static import ItemKNN, MostPop

MODELS: dict[str, type[DomainModel]] = {
    m.name: m for m in (MF, GMF, NeuMF, LightGCN, MFRating, MostPop, ItemKNN, SASRec, GRU4Rec, BERT4Rec)}


def model_class(name: str) -> type[DomainModel]:
    if name not in MODELS:
        raise PipelineError(f"params.yaml: unknown domain model '{name}'; known: {', '.join(sorted(MODELS))}")
    return MODELS[name]
