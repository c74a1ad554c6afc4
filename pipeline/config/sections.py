"""The config layer: params.yaml parsed once into typed, validated pydantic models.

`validate_params` checks the whole file -- types, ranges, choices, cross-field rules, unknown
keys (with a did-you-mean) -- and turns every problem into one PipelineError that names the
file, the dotted key, the value and what is allowed. load_params (pipeline/config/params.py) calls it,
so every stage and the flow refuse a bad file before they read or write anything.

Stages still read their section as a plain dict (`section`/`get`): this layer only decides
whether the file is acceptable. So a key that is absent is not an error here (a stage's `get`
names it when it needs it; tests write small params files), but a key that is present must be
right, and a key or section nobody reads is refused: a misspelt `kcore.min_ratings: 4` used
to run without its filter.
"""
from __future__ import annotations

import difflib
import typing
from typing import Annotated, Any, Literal, Optional, Union

from pydantic import (BaseModel, ConfigDict, Field, StringConstraints, ValidationError, field_validator,
                      model_validator)

from pipeline.errors import PipelineError
from pipeline.names import NAME_PATTERN, RULE, check_launcher

# Fields default to None meaning "absent" (defaults are not validated); an explicit value,
# null included, must fit the annotation.
Name = Annotated[str, StringConstraints(pattern=NAME_PATTERN)]
Seed = Annotated[int, Field(ge=0)]
Positive = Annotated[int, Field(ge=1)]
NonNegative = Annotated[int, Field(ge=0)]
Rate = Annotated[float, Field(gt=0)]            # learning rates
Decay = Annotated[float, Field(ge=0)]
Share = Annotated[float, Field(ge=0, le=1)]     # fractions, probabilities
# (count + 1) ** alpha: past ~10 a large catalogue's weights overflow float64 to inf and the
# sampler silently fell back to uniform (alpha 120 or .inf)
Alpha = Annotated[float, Field(ge=0, le=10)]
Precision = Literal["auto", "no", "bf16"]
Task = Literal["interaction", "topk", "retrieval", "ranking", "rating", "mim", "bpr", "mlm"]
TaskWeights = dict[Task, Annotated[float, Field(ge=0)]]
# rec tasks the LLM rows are scored on that have training prompts (ranking's train prompt is retrieval's)
SCORED_TASKS = ("interaction", "topk", "retrieval", "rating")

# pipeline/models/registry.py MODELS (not imported: it pulls in torch for every stage's start;
# tests/test_bad_inputs.py checks the two agree)
DOMAIN_MODELS = ("mostpop", "itemknn", "mf", "gmf", "ncf", "lightgcn", "sasrec", "gru4rec", "bert4rec", "mf_rating")
JOINT_MODELS = ("lightgcn", "ncf")


class Section(BaseModel):
    # strict: no "5" -> 5, no true -> 1; finite: no .nan/.inf anywhere in params
    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False, populate_by_name=True)


class Download(Section):
    timeout_s: Annotated[float, Field(gt=0)] = None
    allow_unpinned: bool = None


class Kcore(Section):
    user_k: Positive = None
    item_k: Positive = None
    min_rating: Optional[float] = None
    dedupe: Literal["last", "first"] = None
    seed: Seed = None


class Split(Section):
    min_interactions: Annotated[int, Field(ge=3)] = None  # one each for train, valid and test


class Negatives(Section):
    seed: Seed = None
    topk_negatives: Positive = None
    ranking_negatives: Positive = None
    binary_negatives: Positive = None
    popularity_alpha: Alpha = None
    text_fraction: Share = None
    text_pool: Positive = None
    text_backend: Literal["tfidf", "minilm"] = None
    text_anchor: Literal["history", "positive"] = None
    text_history: Positive = None


class DomainTrain(Section):
    epochs: Positive = None
    lr: Rate = None
    weight_decay: Decay = None
    patience: Positive = None
    eval_every: Positive = None
    seed: Seed = None
    mixed_precision: Precision = None  # training steps autocast to bf16 (validation stays float32)
    valid_k: Positive = None  # early stopping maximises valid NDCG@valid_k (default 10)
    threads: Optional[Positive] = None  # torch threads; null: torch's default (honours OMP_NUM_THREADS)


# Per-model sections: the model's own keys, plus any domain.train key (it overrides there).
class _Model(DomainTrain):
    pass


class _Embedding(_Model):
    dim: Positive = None
    batch_size: Positive = None


class MostPop(_Model):
    pass


class ItemKNN(_Model):
    neighbors: Positive = None


class _BPREmbedding(_Embedding):
    # normal: N(0, 0.1^2), as the PyTorch NCF/LightGCN reference code; xavier: Xavier-uniform, as
    # LightGCN's paper (He et al. 2020, 4.1.2) and RecBole initialise
    init: Literal["normal", "xavier"] = None


class MF(_BPREmbedding):
    reg: Decay = None


class GMF(_Embedding):
    n_negatives: Positive = None


class NCF(_Embedding):
    n_negatives: Positive = None
    dropout: Annotated[float, Field(ge=0, lt=1)] = None


class LightGCN(_BPREmbedding):
    n_layers: NonNegative = None  # 0 layers is plain MF on the same loss
    reg: Decay = None


class _Sequential(_Embedding):
    max_len: Positive = None
    bucket: Positive = None  # runs of bucket x batch_size users sorted by length (1: none)
    n_layers: Positive = None
    dropout: Annotated[float, Field(ge=0, lt=1)] = None
    loss: Literal["ce", "sampled"] = None
    # sampled softmax: negatives per batch (must be < the catalogue: the model checks it, the
    # number of items is not known here) and their popularity exponent (0: uniform)
    n_sampled: Positive = None
    sampled_alpha: Alpha = None


class _Transformer(_Sequential):
    n_heads: Positive = None

    @model_validator(mode="after")
    def _heads_divide_dim(self):
        if self.dim is not None and self.n_heads is not None and self.dim % self.n_heads:
            raise ValueError(f"dim {self.dim} must be a multiple of n_heads {self.n_heads} (attention splits it)")
        return self


class SASRec(_Transformer):
    loss: Literal["ce", "sampled", "bce"] = None


class GRU4Rec(_Sequential):
    pass


class BERT4Rec(_Transformer):
    mask_prob: Annotated[float, Field(gt=0, le=1)] = None


class MFRating(_Embedding):
    reg: Decay = None


class Domain(Section):
    models: list[Literal[DOMAIN_MODELS]] = None  # type: ignore[valid-type]
    export: list[Literal[DOMAIN_MODELS]] = None  # type: ignore[valid-type]
    train: DomainTrain = None
    mostpop: MostPop = None
    itemknn: ItemKNN = None
    mf: MF = None
    gmf: GMF = None
    ncf: NCF = None
    lightgcn: LightGCN = None
    sasrec: SASRec = None
    gru4rec: GRU4Rec = None
    bert4rec: BERT4Rec = None
    mf_rating: MFRating = None

    @model_validator(mode="after")
    def _export_is_trained(self):
        if self.models is not None and self.export is not None:
            missing = [m for m in self.export if m not in self.models]
            if missing:
                raise ValueError(f"domain.export lists {missing}, which domain.models does not train")
        return self


class Variant(Section):
    vocab: Literal["pe", "rand", "text"] = None
    aux: bool = None
    align: Decay = None  # weight of sft's answer-state / user-row alignment loss (absent or 0: off)

    @model_validator(mode="after")
    def _align_needs_user_rows(self):
        if self.align and self.vocab == "text":
            raise ValueError(f"align = {self.align} needs user tokens (vocab pe or rand); "
                             "with vocab text there is no user row to align with")
        return self


class Llm(Section):
    base: Annotated[str, StringConstraints(min_length=1)] = None
    preload_from: Literal[DOMAIN_MODELS] = None  # type: ignore[valid-type]
    seed: Seed = None
    vocab_modes: list[Literal["pe", "rand", "text"]] = None
    variants: list[Name] = None
    variant: dict[Name, Variant] = None

    @model_validator(mode="after")
    def _variants_exist(self):
        if self.variants is not None and self.variant is not None:
            unknown = [v for v in self.variants if v not in self.variant]
            if unknown:
                raise ValueError(f"llm.variants lists {unknown}, which llm.variant does not define "
                                 f"(it has {sorted(self.variant)})")
            if self.vocab_modes is not None:
                bad = [v for v in self.variants if self.variant[v].vocab not in (None, *self.vocab_modes)]
                if bad:
                    raise ValueError(f"llm.variants {bad} use a vocab mode not in llm.vocab_modes {self.vocab_modes}")
        return self


class Prompts(Section):
    seed: Seed = None
    history_len: Positive = None
    title_max_words: Optional[Positive] = None
    candidate_titles: bool = None
    max_train_users: Optional[Positive] = None
    mlm_mask_prob: Annotated[float, Field(gt=0, le=1)] = None
    train_targets_per_user: Positive = None
    train_topk_negatives: Positive = None
    popularity_alpha: Alpha = None
    max_history_chars: Optional[Positive] = None
    mlm_max_words: Positive = None
    mlm_max_items: Optional[Positive] = None
    train_users: Literal["all", "eval_first"] = None
    train_topk_sampler: Literal["eval", "popularity"] = None
    user_token_at_answer: bool = None


class Orchestration(Section):
    gpu_stages: list[Name] = None
    launcher: str = None

    @field_validator("launcher")
    @classmethod
    def _launcher_grammar(cls, value: str) -> str:
        # it goes unquoted into dvc.yaml's sft/joint_train commands (pipeline/names.py)
        try:
            return check_launcher(value, "launcher")
        except PipelineError as e:
            raise ValueError(str(e).removeprefix(f"launcher: {value!r}").lstrip(": ")) from None


class _Warmup(Section):
    steps: Positive = None
    warmup_steps: NonNegative = None

    @model_validator(mode="after")
    def _warmup_within_steps(self):
        if self.steps is not None and self.warmup_steps is not None and self.warmup_steps > self.steps:
            raise ValueError(f"warmup_steps {self.warmup_steps} exceeds steps {self.steps}: "
                             "the learning rate would never reach its peak")
        return self


class _LlmTraining(_Warmup):
    """What SFT and joint training share: the LLM's batch, optimizer, prompt budget, checkpoints."""
    batch_size: Positive = None
    lr: Rate = None
    weight_decay: Decay = None
    max_len: Annotated[int, Field(ge=8)] = None
    checkpoint_every: Positive = None
    seed: Seed = None
    mixed_precision: Precision = None
    task_weights: TaskWeights = None

    @field_validator("task_weights")
    @classmethod
    def _scores_something(cls, value):
        # a mix of auxiliary tasks only trains nothing evaluate_llm / evaluate_joint scores
        if value is not None and not any(value.get(t, 0) > 0 for t in SCORED_TASKS):
            raise ValueError(f"no scored task has a weight > 0 (scored: {', '.join(SCORED_TASKS)}; "
                             f"mim/bpr/mlm are auxiliary): the run would train nothing that is evaluated")
        return value


class Sft(_LlmTraining):
    grad_accum: Positive = None
    lora: bool = None
    lora_r: Positive = None
    row_lr: Rate = None     # the <uid>/<iid> rows' own learning rate under LoRA
    bucket: Positive = None  # batches per length-sorting window (1: none)
    curve_every: NonNegative = None


class EvaluateLlm(Section):
    max_users: Optional[Positive] = None
    seed: Seed = None
    batch_size: Positive = None
    mixed_precision: Precision = None


class JointTrain(_LlmTraining):
    drs_batch_size: Positive = None
    drs_per_llm: Positive = None
    share: Literal["users", "items", "both"] = None
    pooling: Literal["last", "mean"] = None
    drs_lr: Rate = None
    drs_head_lr: Rate = None
    drs_domain_weight: Annotated[float, Field(ge=0, allow_inf_nan=False)] = None
    drs_pool: Positive = None
    refresh_every: Positive = None
    aux: bool = None


Lambda = Annotated[float, Field(ge=0, allow_inf_nan=False, alias="lambda")]


class JointExperiment(JointTrain):
    """One joint.experiment entry: its domain model, its LLM (vocab), optionally its own lambda
    and any train key."""
    model: Literal[JOINT_MODELS] = None  # type: ignore[valid-type]
    vocab: Literal["pe", "rand", "text"] = None
    lambda_: Lambda = None


class Joint(Section):
    experiments: list[Name] = None
    lambda_: Lambda = None
    train: JointTrain = None
    experiment: dict[Name, Optional[JointExperiment]] = None

    @model_validator(mode="after")
    def _experiments_exist(self):
        if self.experiments is not None and self.experiment is not None:
            unknown = [e for e in self.experiments if e not in self.experiment]
            if unknown:
                raise ValueError(f"joint.experiments lists {unknown}, which joint.experiment does not define "
                                 f"(it has {sorted(self.experiment)})")
        return self


class Evaluation(Section):
    confidence: Annotated[float, Field(gt=0, lt=1)] = None
    bootstrap_samples: Annotated[int, Field(ge=100)] = None
    seed: Seed = None


class Params(Section):
    datasets: list[Name] = None
    download: Download = None
    kcore: Kcore = None
    split: Split = None
    negatives: Negatives = None
    domain: Domain = None
    llm: Llm = None
    prompts: Prompts = None
    orchestration: Orchestration = None
    sft: Sft = None
    evaluate_llm: EvaluateLlm = None
    joint: Joint = None
    evaluation: Evaluation = None

    @model_validator(mode="after")
    def _across_sections(self):
        errors = []
        if self.llm and self.llm.preload_from and self.domain and self.domain.export is not None \
                and self.llm.preload_from not in self.domain.export:
            errors.append(f"llm.preload_from '{self.llm.preload_from}' is not in domain.export "
                          f"{self.domain.export} (export_embeddings would not write its tables)")
        if self.joint and self.joint.experiments and self.domain and self.domain.models is not None:
            missing = [m for m in JOINT_MODELS if m not in self.domain.models]
            if missing:
                errors.append(f"joint.experiments is not empty, so domain.models must train {list(JOINT_MODELS)} "
                              f"(joint_train depends on both); missing {missing}")
        if self.joint and self.joint.experiments and self.joint.experiment and self.llm and self.llm.vocab_modes:
            for name in self.joint.experiments:
                vocab = (self.joint.experiment.get(name) or JointExperiment()).vocab or "pe"
                if vocab not in self.llm.vocab_modes:
                    errors.append(f"joint.experiment.{name} starts from vocab '{vocab}', which llm.vocab_modes "
                                  f"{self.llm.vocab_modes} does not build (expand_vocab)")
        if errors:
            raise ValueError("; ".join(errors))
        return self


# --- errors in the words of params.yaml ------------------------------------------------------

def _dotted(loc: tuple) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part == "[key]":
            out += " (a key)"
        else:
            out += ("." if out else "") + str(part)
    return out


def _unwrap(tp: Any) -> Any:
    """The model class or container behind Optional[...] / Annotated[...]."""
    while True:
        origin = typing.get_origin(tp)
        if origin is Annotated:
            tp = typing.get_args(tp)[0]
        elif origin is Union:
            args = [a for a in typing.get_args(tp) if a is not type(None)]
            tp = args[0] if len(args) == 1 else tp
            if len(args) != 1:
                return tp
        else:
            return tp


def _known_keys(loc: tuple) -> list[str]:
    """The keys allowed where `loc`'s last part was found (for a did-you-mean)."""
    tp: Any = Params
    for part in loc[:-1]:
        tp = _unwrap(tp)
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            field = next((f for n, f in tp.model_fields.items() if (f.alias or n) == part), None)
            if field is None:
                return []
            tp = field.annotation
        elif typing.get_origin(tp) in (dict, list):
            tp = typing.get_args(tp)[-1]
        else:
            return []
    tp = _unwrap(tp)
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return [f.alias or n for n, f in tp.model_fields.items()]
    return []


def _describe(err: dict) -> str:
    loc, value, kind = tuple(err["loc"]), err.get("input"), err["type"]
    key = _dotted(loc)
    if kind == "extra_forbidden":
        known = _known_keys(loc)
        close = difflib.get_close_matches(str(loc[-1]), known, n=1)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        where = _dotted(loc[:-1]) or "the top level"
        return f"unknown key '{key}'{hint} ({where} has: {', '.join(known)})"
    msg = err["msg"].removeprefix("Value error, ")
    if kind in ("float_type", "int_type") and isinstance(value, str):
        try:
            float(value)
            msg += " (a number in quotes is a string: write it without quotes)"
        except ValueError:
            pass
    if kind == "missing":
        return f"{key}: missing ({msg})"
    if kind == "string_pattern_mismatch" and "a-z0-9" in msg:
        msg = f"not a valid name: a name must be {RULE}"
    if isinstance(value, (dict, list)) and kind in ("value_error", "assertion_error"):
        # a cross-field rule: its message names its keys in full, or relative to `key`
        return msg if not key or msg.startswith(str(loc[0]) + ".") else f"{key}: {msg}"
    return f"{key} = {value!r}: {msg}" if key else f"{msg}"


def validate_params(params: Any, source: str = "params.yaml") -> Params:
    """The whole params file as typed models; a PipelineError lists every problem."""
    try:
        return Params.model_validate(params)
    except ValidationError as e:
        problems = [_describe(err) for err in e.errors(include_url=False)]
        raise PipelineError(f"{source}: {len(problems)} problem(s):\n  " + "\n  ".join(problems)) from None
