"""Building the prompt tables: `build_specs` (every split's samples, render-independent, and the
build statistics), `build_all` (both renders of every split and the metrics of
data/metrics/prompts/<ds>.json) and `item_tables` (each item's pair suffix, items.parquet): what
stages/build_prompts calls. Each task's rows come from its class in `tasks/`; every build
ends with the leakage check."""
from __future__ import annotations

import numpy as np
import pyarrow as pa

from pipeline.data.negatives import Forbidden, NegativesConfig, popularity_weights
from pipeline.llm.prompts.config import PromptsConfig
from pipeline.llm.prompts.inputs import Inputs, item_texts, max_used_iid, require_columns, sequences
from pipeline.llm.prompts.leakage import check_leakage
from pipeline.llm.prompts.render import Renderer, domain_for, render_table
from pipeline.llm.prompts.schema import ITEMS_SCHEMA, REC_TASKS, RENDERS, SPLITS, Spec
from pipeline.llm.prompts.tasks import TASK_BY_NAME
from pipeline.llm.prompts.tasks.base import EvalTargets, TrainTargets
from pipeline.llm.prompts.tasks.mlm import MLM
from pipeline.llm.prompts.tasks.rating import rating_support
from pipeline.llm.prompts.train_users import select_train_users

# The order the evaluation sets are read and checked in, so a broken input is named by the same
# first error; the rows are then put in REC_TASKS order.
EVAL_READ_ORDER = ("interaction", "topk", "ranking", "retrieval", "rating")


def build_specs(inputs: Inputs, cfg: PromptsConfig, eval_users: np.ndarray | None = None,
                sampler: NegativesConfig | None = None, vectors=None) -> tuple[dict[str, list[Spec]], dict]:
    """All samples per split (render-independent) and build statistics. `eval_users`: the users
    evaluate_llm scores (needed by train_users eval_first); `sampler`: the evaluation sets'
    negatives config (needed by train_topk_sampler eval; `vectors` its item text vectors, built
    from the titles when not given)."""
    require_columns(inputs)
    titles, descs = item_texts(inputs.items, max_used_iid(inputs), "items.parquet")
    n_items = len(titles)
    has_rating, rating_reason = rating_support(inputs.splits["train"])

    seqs = {s: sequences(inputs.splits[s]) for s in SPLITS}
    train_items, train_ratings = seqs["train"]
    train_stats: dict = {}
    specs = {"train": _train_specs(inputs, cfg, train_items, train_ratings, n_items, has_rating,
                                   eval_users, sampler, titles, vectors, train_stats),
             "valid": [], "test": []}
    specs["train"] += MLM().item_specs(titles, descs, cfg)
    for s in ("valid", "test"):
        target_items, target_ratings = seqs[s]
        history = {}
        for u, it in target_items.items():
            h = train_items.get(u, np.array([], dtype=np.int64))
            if s == "test":
                h = np.concatenate([h, seqs["valid"][0].get(u, np.array([], dtype=np.int64))])
            history[u] = h
        specs[s] = _eval_specs(EvalTargets(s, inputs.sets, target_items, target_ratings, history, cfg, has_rating))

    heldout: dict[int, set[int]] = {}
    for s in ("valid", "test"):
        for u, it in seqs[s][0].items():
            heldout.setdefault(u, set()).update(int(x) for x in it)
    check_leakage(specs, heldout, {u: {int(x) for x in it} for u, it in seqs["test"][0].items()})
    train_users = {sp.uid for sp in specs["train"] if sp.uid >= 0}
    stats = {"rating_task": {"enabled": has_rating, "reason": rating_reason},
             "train_users": len(train_users), "n_items": n_items, **train_stats}
    if eval_users is not None:
        stats["evaluated_users"] = int(len(eval_users))
        stats["evaluated_users_in_train"] = int(len(train_users & {int(u) for u in eval_users}))
    return specs, stats


def _train_specs(inputs: Inputs, cfg: PromptsConfig, train_items: dict[int, np.ndarray],
                 train_ratings: dict[int, np.ndarray], n_items: int, has_rating: bool,
                 eval_users: np.ndarray | None, sampler: NegativesConfig | None,
                 titles: list[str], vectors, stats: dict) -> list[Spec]:
    """The user tasks' training rows: the last prompts.train_targets_per_user training items of
    each selected user (train_users) are the targets; the rows are grouped by task."""
    eligible = np.array(sorted(u for u, it in train_items.items() if len(it) >= 2), dtype=np.int64)
    eligible = select_train_users(cfg, eligible, eval_users, stats)
    t_uid, t_pos, t_iid, t_rating = [], [], [], []
    for u in eligible.tolist():
        seq = train_items[u]
        for j in range(max(1, len(seq) - cfg.train_targets_per_user), len(seq)):
            t_uid.append(u)
            t_pos.append(j)
            t_iid.append(int(seq[j]))
            t_rating.append(float(train_ratings[u][j]))
    if not t_uid:
        return []
    # Training negatives are drawn, as the evaluation sets' are, from items the user never
    # interacted with in any split: a held-out item is never shown in a training prompt.
    forbidden = Forbidden(np.concatenate([inputs.splits[s]["uid"].to_numpy() for s in SPLITS]),
                          np.concatenate([inputs.splits[s]["iid"].to_numpy() for s in SPLITS]), n_items)
    train_iids = inputs.splits["train"]["iid"].to_numpy().astype(np.int64)
    targets = TrainTargets(cfg, train_items, t_uid, t_pos, t_iid, t_rating, forbidden, n_items, train_iids,
                           popularity_weights(train_iids, n_items, cfg.popularity_alpha), has_rating,
                           sampler, titles, vectors, stats)
    return [sp for task in TASK_BY_NAME.values() for sp in task.train_specs(targets)]


def _eval_specs(targets: EvalTargets) -> list[Spec]:
    out = [sp for name in EVAL_READ_ORDER for sp in TASK_BY_NAME[name].eval_specs(targets)]
    order = {t: k for k, t in enumerate(REC_TASKS)}
    return sorted(out, key=lambda sp: order[sp.task])  # stable: within a task, file order


def item_tables(inputs: Inputs, cfg: PromptsConfig, dataset: str) -> dict[str, pa.Table]:
    """{render: items.parquet}: each item's pair suffix, so a consumer builds the pair prompt of
    any (row, item) as the row's pair_prefix + the item's pair_suffix."""
    titles, _ = item_texts(inputs.items, -1, "items.parquet")
    out = {}
    for render in RENDERS:
        r = Renderer(titles, domain_for(dataset), cfg, tokens=render == "tokens")
        out[render] = pa.table({"iid": pa.array(range(len(titles)), pa.int32()),
                                "pair_suffix": [r.pair_suffix(k) for k in range(len(titles))]}, schema=ITEMS_SCHEMA)
    return out


def build_all(inputs: Inputs, cfg: PromptsConfig, dataset: str, eval_users: np.ndarray | None = None,
              sampler: NegativesConfig | None = None) -> tuple[dict[str, dict[str, pa.Table]], dict]:
    """{render: {split: table}} and the metrics for data/metrics/prompts/<ds>.json
    (`eval_users`, `sampler`: build_specs)."""
    specs, build_stats = build_specs(inputs, cfg, eval_users, sampler)
    titles, _ = item_texts(inputs.items, -1, "items.parquet")
    domain = domain_for(dataset)
    tables: dict[str, dict[str, pa.Table]] = {}
    counts: dict = {s: {} for s in SPLITS}
    truncated: dict = {s: {} for s in SPLITS}
    mean_chars: dict = {s: {} for s in SPLITS}
    max_chars: dict = {s: {} for s in SPLITS}
    by_task_chars: dict = {s: {} for s in SPLITS}
    for render in RENDERS:
        renderer = Renderer(titles, domain, cfg, tokens=render == "tokens")
        tables[render] = {}
        for s in SPLITS:
            table, st = render_table(specs[s], renderer)
            tables[render][s] = table
            for task, n in st["counts"].items():
                counts[s].setdefault(task, {})[render] = n
            truncated[s][render] = st["histories_truncated"]
            mean_chars[s][render] = round(st["mean_prompt_chars"], 1)
            max_chars[s][render] = st["max_prompt_chars"]
            by_task_chars[s][render] = {t: round(v, 1) for t, v in st["mean_prompt_chars_by_task"].items()}
    metrics = {"dataset": dataset, "domain_noun": domain.noun, **build_stats,
               "train_tasks_note": "train has no ranking rows: its prompt is the retrieval prompt",
               "rows": {s: tables["tokens"][s].num_rows for s in SPLITS},
               "counts": counts, "histories_truncated": truncated,
               "max_history_chars": cfg.max_history_chars,
               "mean_prompt_chars": mean_chars, "max_prompt_chars": max_chars,
               "mean_prompt_chars_by_task": by_task_chars}
    return tables, metrics
