"""Model names (as written in params.yaml) -> classes."""
from __future__ import annotations

from pipeline.errors import PipelineError
from pipeline.models.base import DomainModel
from pipeline.models.collaborative import GMF, MF, LightGCN, MFRating, NeuMF
from pipeline.models.static import ItemKNN, MostPop


def _all() -> dict[str, type[DomainModel]]:
    models: list[type[DomainModel]] = [MF, GMF, NeuMF, LightGCN, MFRating, MostPop, ItemKNN]
    try:
        from pipeline.models.sequential import BERT4Rec, GRU4Rec, SASRec
        models += [SASRec, GRU4Rec, BERT4Rec]
    except ImportError:  # sequential models not present in this checkout
        pass
    return {m.name: m for m in models}


MODELS = _all()


def model_class(name: str) -> type[DomainModel]:
    if name not in MODELS:
        raise PipelineError(f"params.yaml: unknown domain model '{name}'; known: {', '.join(sorted(MODELS))}")
    return MODELS[name]
