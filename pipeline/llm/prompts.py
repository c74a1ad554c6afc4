"""Prompt/answer samples for LLM fine-tuning and evaluation (docs/design.md, "The DAG" and "Auxiliary tasks").

Rec tasks (family "rec"): BDLM's interaction prediction (Yes/No) and top-K (1 of 1+19
candidates), in the wording of the paper's Table 2; Cao et al.'s retrieval, ranking (the
retrieval prompt, the 1+99 candidates only in the `candidates` column) and rating.
Auxiliary tasks (family "aux", train split only): MIM (a masked history item), BPR (which
of two items the user prefers) and MLM over item text (Cao et al. 2024).

Samples are built once as render-independent specs (which user, which items, which
negatives, which words are masked) and rendered twice: `tokens` (`<uid_k>`/`<iid_k>`) and
`text` ("user k"/"item k"), so both renders hold the same samples. Ids are always written
through pipeline.llm.tokens.

Leakage: train rows show the user's training items only (history, targets, MIM); their
negatives are drawn, as the evaluation sets' are, from items the user never interacted with in
any split, so a held-out valid/test item never appears in a training prompt, not even as a
negative. Valid rows condition on train items, test rows on train + valid. `check_leakage`
verifies this on every build.

Which users the training prompts cover (`train_users`): `all` draws `max_train_users` of every
user; `eval_first` takes the users evaluate_llm scores (evaluate_llm.max_users / seed) first
and fills the rest of `max_train_users` with a seeded draw of the others, so a small training
budget is spent on the users the LLM rows are measured on. Training top-K candidate sets
(`train_topk_sampler`): `eval` draws them with the evaluation sets' sampler (negatives.*:
text-similar negatives around the user's history before the target + popularity), `popularity`
with popularity alone.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipeline.errors import PipelineError
from pipeline.llm.tokens import item_text, user_text
from pipeline.data.negatives import (Forbidden, NegativesConfig, candidate_sets, draw_negatives, history_pool,
                                 popularity_weights)

SPLITS = ("train", "valid", "test")
RENDERS = ("tokens", "text")
REC_TASKS = ("interaction", "topk", "retrieval", "ranking", "rating")
AUX_TASKS = ("mim", "bpr", "mlm")
TASKS = REC_TASKS + AUX_TASKS
FAMILY = {**{t: "rec" for t in REC_TASKS}, **{t: "aux" for t in AUX_TASKS}}
MASK = "[MASK]"
EVAL_SETS = ("topk", "ranking", "binary")
TRAIN_USERS = ("all", "eval_first")
TRAIN_TOPK_SAMPLERS = ("eval", "popularity")

SCHEMA = pa.schema([
    ("task", pa.string()), ("family", pa.string()), ("prompt", pa.string()), ("answer", pa.string()),
    ("uid", pa.int32()), ("iid", pa.int32()), ("candidates", pa.list_(pa.int32())),
    ("label_index", pa.int32()), ("label", pa.int8()), ("rating", pa.float32()),
    ("pair_prefix", pa.string()),
])
# The text each item is named by in a pair prompt (items.parquet beside the prompt tables).
ITEMS_SCHEMA = pa.schema([("iid", pa.int32()), ("pair_suffix", pa.string())])


@dataclass(frozen=True)
class PromptsConfig:
    seed: int = 0
    history_len: int = 5
    title_max_words: int | None = 6
    candidate_titles: bool = True
    max_train_users: int | None = None
    mlm_mask_prob: float = 0.3
    train_targets_per_user: int = 3
    train_topk_negatives: int = 19
    popularity_alpha: float = 0.75
    max_history_chars: int | None = 400
    mlm_max_words: int = 32
    mlm_max_items: int | None = None
    train_users: str = "all"
    train_topk_sampler: str = "popularity"
    user_token_at_answer: bool = False

    def __post_init__(self):
        def need(ok: bool, key: str, what: str):
            if not ok:
                raise PipelineError(f"params.yaml: prompts.{key} must be {what}, got {getattr(self, key)!r}")
        need(self.history_len >= 1, "history_len", ">= 1")
        need(self.title_max_words is None or self.title_max_words >= 1, "title_max_words", ">= 1 or null")
        need(self.max_train_users is None or self.max_train_users >= 1, "max_train_users", ">= 1 or null")
        need(0.0 < self.mlm_mask_prob <= 1.0, "mlm_mask_prob", "in (0, 1]")
        need(self.train_targets_per_user >= 1, "train_targets_per_user", ">= 1")
        need(self.train_topk_negatives >= 1, "train_topk_negatives", ">= 1")
        need(self.popularity_alpha >= 0, "popularity_alpha", ">= 0")
        need(self.max_history_chars is None or self.max_history_chars >= 1, "max_history_chars", ">= 1 or null")
        need(self.mlm_max_words >= 2, "mlm_max_words", ">= 2")
        need(self.mlm_max_items is None or self.mlm_max_items >= 0, "mlm_max_items", ">= 0 or null")
        need(self.train_users in TRAIN_USERS, "train_users", f"one of {', '.join(TRAIN_USERS)}")
        need(self.train_topk_sampler in TRAIN_TOPK_SAMPLERS, "train_topk_sampler",
             f"one of {', '.join(TRAIN_TOPK_SAMPLERS)}")


@dataclass(frozen=True)
class Domain:
    noun: str   # "movie"
    nouns: str  # "movies"
    did: str    # "watched"
    do: str     # "watch"


def domain_for(dataset: str) -> Domain:
    """The wording of a dataset: movies for MovieLens, products for Amazon, items otherwise."""
    if dataset.startswith("ml-"):
        return Domain("movie", "movies", "watched", "watch")
    if dataset.startswith("amazon-"):
        return Domain("product", "products", "purchased", "purchase")
    return Domain("item", "items", "interacted with", "interact with")


@dataclass
class Spec:
    """One sample, render-independent."""
    task: str
    uid: int = -1
    iid: int = -1
    history: list[int] = field(default_factory=list)  # oldest first, already cut to history_len
    candidates: list[int] = field(default_factory=list)
    label_index: int = -1
    label: int = -1
    rating: float = float("nan")
    mask_pos: int = -1      # MIM: position in `history` shown as [MASK]
    show_candidates: bool = False
    text: str = ""          # MLM: the masked item text
    answer: str = ""        # MLM answer (the masked words); others are derived at render time


@dataclass
class Inputs:
    splits: dict[str, pa.Table]       # uid, iid[, rating, timestamp, raw_row]
    sets: dict[str, pa.Table]         # '<valid|test>_<topk|ranking|binary>'
    items: pa.Table                   # iid, title[, description]


# ---------------------------------------------------------------- reading and checking

def load_inputs(split_dir: Path, negatives_dir: Path, items_path: Path) -> Inputs:
    """Read the split, the evaluation sets and the item texts; a missing file is named."""
    def read(path: Path, stage: str, columns=None) -> pa.Table:
        if not path.exists():
            raise PipelineError(f"{path}: not found (run `dvc repro {stage}` first)")
        return pq.read_table(path, columns=columns)

    splits = {s: read(Path(split_dir) / f"{s}.parquet", "split") for s in SPLITS}
    sets = {f"{s}_{p}": read(Path(negatives_dir) / f"{s}_{p}.parquet", "negatives")
            for s in ("valid", "test") for p in EVAL_SETS}
    items = read(Path(items_path), "kcore")
    return Inputs(splits, sets, items)


def _require(table: pa.Table, columns: tuple[str, ...], what: str) -> None:
    missing = [c for c in columns if c not in table.column_names]
    if missing:
        raise PipelineError(f"{what}: missing column(s) {', '.join(missing)}")


def item_texts(items: pa.Table, used_max: int, where: str) -> tuple[list[str], list[str]]:
    """(title, description) per dense iid 0..n-1; every iid up to `used_max` must be present."""
    _require(items, ("iid", "title"), where)
    iids = np.asarray(items["iid"].to_numpy(zero_copy_only=False), dtype=np.int64)
    if len(iids) and iids.min() < 0:
        raise PipelineError(f"{where}: negative iid {int(iids.min())}")
    n = max(int(iids.max()) + 1 if len(iids) else 0, used_max + 1)
    have = np.zeros(n, dtype=bool)
    have[iids] = True
    if not have.all():
        missing = np.flatnonzero(~have)
        raise PipelineError(f"{where}: no row for iid {int(missing[0])} used in the split "
                            f"({len(missing)} ids missing; kcore and split are out of step, re-run kcore)")
    titles = [""] * n
    descs = [""] * n
    desc_col = items["description"].to_pylist() if "description" in items.column_names else [""] * len(iids)
    for i, t, d in zip(iids.tolist(), items["title"].to_pylist(), desc_col):
        titles[i] = t or ""
        descs[i] = d or ""
    return titles, descs


def _sequences(table: pa.Table) -> tuple[dict[int, np.ndarray], dict[int, np.ndarray]]:
    """Per user: items and ratings in time order (timestamp, then raw-file row)."""
    uid = table["uid"].to_numpy().astype(np.int64)
    iid = table["iid"].to_numpy().astype(np.int64)
    rating = (table["rating"].to_numpy().astype(np.float64) if "rating" in table.column_names
              else np.full(len(uid), np.nan))
    keys = [uid]
    for c in ("timestamp", "raw_row"):
        if c in table.column_names:
            keys.insert(0, table[c].to_numpy())
    order = np.lexsort(keys) if len(keys) > 1 else np.argsort(uid, kind="stable")
    uid, iid, rating = uid[order], iid[order], rating[order]
    starts = np.flatnonzero(np.r_[True, uid[1:] != uid[:-1]]) if len(uid) else np.array([], dtype=np.int64)
    ends = np.r_[starts[1:], len(uid)]
    items = {int(uid[s]): iid[s:e] for s, e in zip(starts, ends)}
    ratings = {int(uid[s]): rating[s:e] for s, e in zip(starts, ends)}
    return items, ratings


def _max_or(column, default: int) -> int:
    m = pc.max(column).as_py()
    return default if m is None else int(m)


def rating_support(train: pa.Table) -> tuple[bool, str]:
    """Whether the dataset has explicit 1-5 ratings to predict, and why not if not."""
    if "rating" not in train.column_names:
        return False, "no rating column"
    r = train["rating"].to_numpy().astype(np.float64)
    if len(r) == 0:
        return False, "empty train split"
    if not np.isfinite(r).all():
        return False, "non-finite ratings"
    if np.unique(r).size < 2:
        return False, f"implicit feedback: every rating is {r[0]:g}"
    if r.min() < 1 or r.max() > 5:
        return False, f"ratings outside 1-5 (min {r.min():g}, max {r.max():g})"
    return True, "explicit ratings in 1-5"


def rating_digit(r: float) -> str:
    return str(int(np.clip(np.rint(r), 1, 5)))


# ---------------------------------------------------------------- building the specs

def _recent(seq: np.ndarray, n: int) -> list[int]:
    return [int(x) for x in seq[max(0, len(seq) - n):]]


def build_specs(inputs: Inputs, cfg: PromptsConfig, eval_users: np.ndarray | None = None,
                sampler: NegativesConfig | None = None, vectors=None) -> tuple[dict[str, list[Spec]], dict]:
    """All samples per split (render-independent) and build statistics. `eval_users`: the users
    evaluate_llm scores (needed by train_users eval_first); `sampler`: the evaluation sets'
    negatives config (needed by train_topk_sampler eval; `vectors` its item text vectors, built
    from the titles when not given)."""
    for s in SPLITS:
        _require(inputs.splits[s], ("uid", "iid"), f"split {s}.parquet")
    for name, t in inputs.sets.items():
        _require(t, ("uid", "iid", "label") if name.endswith("binary")
                 else ("uid", "pos_iid", "candidates", "label_index"), f"negatives {name}.parquet")
    used = [inputs.splits[s]["iid"] for s in SPLITS]
    used += [pc.list_flatten(t["candidates"]) if "candidates" in t.column_names else t["iid"]
             for t in inputs.sets.values()]
    used_max = max(_max_or(c, -1) for c in used)
    titles, descs = item_texts(inputs.items, used_max, "items.parquet")
    n_items = len(titles)
    has_rating, rating_reason = rating_support(inputs.splits["train"])

    seqs = {s: _sequences(inputs.splits[s]) for s in SPLITS}
    train_items, train_ratings = seqs["train"]
    train_stats: dict = {}
    specs = {"train": _train_specs(inputs, cfg, train_items, train_ratings, n_items, has_rating,
                                   eval_users, sampler, titles, vectors, train_stats),
             "valid": [], "test": []}
    specs["train"] += _mlm_specs(titles, descs, cfg)
    for s in ("valid", "test"):
        target_items, target_ratings = seqs[s]
        history = {}
        for u, it in target_items.items():
            h = train_items.get(u, np.array([], dtype=np.int64))
            if s == "test":
                h = np.concatenate([h, seqs["valid"][0].get(u, np.array([], dtype=np.int64))])
            history[u] = h
        specs[s] = _eval_specs(s, inputs.sets, target_items, target_ratings, history, cfg, has_rating)

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


def _train_users(cfg: PromptsConfig, eligible: np.ndarray, eval_users: np.ndarray | None,
                 stats: dict) -> np.ndarray:
    """The users whose training samples are written (prompts.train_users, module docstring)."""
    rng = np.random.default_rng([cfg.seed, 0])
    cap = cfg.max_train_users
    stats["train_users_rule"] = cfg.train_users
    if cfg.train_users == "all":
        if cap is not None and len(eligible) > cap:
            eligible = np.sort(rng.choice(eligible, cap, replace=False))
        return eligible
    if eval_users is None:
        raise PipelineError("params.yaml: prompts.train_users is eval_first, but the evaluated users "
                            "(evaluate_llm.max_users / seed) were not given")
    first = np.intersect1d(eligible, np.asarray(eval_users, dtype=np.int64))
    rest = np.setdiff1d(eligible, first)
    if cap is None:
        return eligible
    if len(first) == cap:
        return first
    if len(first) > cap:  # more evaluated users than the cap: a seeded subset of them
        stats["train_users_note"] = (f"prompts.max_train_users {cap} < {len(first)} evaluated users: "
                                     f"only {cap} of them get training prompts")
        return np.sort(rng.choice(first, cap, replace=False))
    fill = rng.choice(rest, min(cap - len(first), len(rest)), replace=False)
    return np.sort(np.concatenate([first, fill]))


def _train_topk_negatives(cfg: PromptsConfig, rng: np.random.Generator, uids: np.ndarray, pos: np.ndarray,
                          before: list[np.ndarray], forbidden: Forbidden, n_items: int, train_iids: np.ndarray,
                          sampler: NegativesConfig | None, titles: list[str], vectors,
                          stats: dict) -> tuple[np.ndarray, np.ndarray]:
    """[rows, train_topk_negatives] negatives and the text-drawn count per row. `before[r]`: the
    user's training items before row r's target (oldest first), the history its text pool is
    anchored on, as the evaluation sets anchor theirs on the items before the held-out one."""
    m = cfg.train_topk_negatives
    stats["train_topk_sampler"] = cfg.train_topk_sampler
    if cfg.train_topk_sampler == "popularity":
        pop_cdf = popularity_weights(train_iids, n_items, cfg.popularity_alpha)
        return draw_negatives(rng, uids, m, forbidden, pop_cdf, None, 0)
    if sampler is None:
        raise PipelineError("params.yaml: prompts.train_topk_sampler is eval, but no negatives config was given")
    pop_cdf = popularity_weights(train_iids, n_items, sampler.popularity_alpha)
    n_text = int(round(sampler.text_fraction * m))
    pool = None
    if n_text > 0 and len(uids):
        from pipeline.data.negatives import text_vectors
        from pipeline.data.textsim import topk_neighbors

        if sampler.text_anchor == "positive":
            anchors = pos[:, None].astype(np.int64)
        else:
            h = sampler.text_history
            anchors = np.full((len(uids), h), -1, dtype=np.int64)
            for r, b in enumerate(before):
                tail = np.asarray(b[max(0, len(b) - h):], dtype=np.int64)
                if len(tail):
                    anchors[r, h - len(tail):] = tail
        if vectors is None:
            vectors = text_vectors(titles, sampler)
        uniq = np.unique(anchors[anchors >= 0])
        nb = (topk_neighbors(vectors, uniq, sampler.text_pool) if len(uniq)
              else np.zeros((0, sampler.text_pool), np.int64))
        pool = history_pool(anchors, lambda items: nb[np.searchsorted(uniq, items)], sampler.text_pool)
    negs, n_from_text = draw_negatives(rng, uids, m, forbidden, pop_cdf, pool, n_text)
    stats["train_topk_text_anchor"] = sampler.text_anchor
    stats["train_topk_mean_text_negatives"] = float(np.mean(n_from_text)) if len(uids) else 0.0
    return negs, n_from_text


def _train_specs(inputs: Inputs, cfg: PromptsConfig, train_items: dict[int, np.ndarray],
                 train_ratings: dict[int, np.ndarray], n_items: int, has_rating: bool,
                 eval_users: np.ndarray | None = None, sampler: NegativesConfig | None = None,
                 titles: list[str] | None = None, vectors=None, stats: dict | None = None) -> list[Spec]:
    stats = {} if stats is None else stats
    eligible = np.array(sorted(u for u, it in train_items.items() if len(it) >= 2), dtype=np.int64)
    eligible = _train_users(cfg, eligible, eval_users, stats)
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
    uids = np.asarray(t_uid, dtype=np.int64)
    pos = np.asarray(t_iid, dtype=np.int64)
    # Training negatives are drawn, as the evaluation sets' are, from items the user never
    # interacted with in any split: a held-out item is never shown in a training prompt.
    forbidden = Forbidden(np.concatenate([inputs.splits[s]["uid"].to_numpy() for s in SPLITS]),
                          np.concatenate([inputs.splits[s]["iid"].to_numpy() for s in SPLITS]), n_items)
    train_iids = inputs.splits["train"]["iid"].to_numpy().astype(np.int64)
    pop_cdf = popularity_weights(train_iids, n_items, cfg.popularity_alpha)
    rng_topk = np.random.default_rng([cfg.seed, 1])
    before = [train_items[u][:j] for u, j in zip(t_uid, t_pos)]
    negs, n_text = _train_topk_negatives(cfg, rng_topk, uids, pos, before, forbidden, n_items, train_iids,
                                         sampler, titles or [], vectors, stats)
    topk = candidate_sets(uids, pos, negs, n_text.astype(np.int16), rng_topk)
    topk_cands = topk["candidates"].to_pylist()
    topk_label = topk["label_index"].to_pylist()
    rng_int = np.random.default_rng([cfg.seed, 2])
    int_negs, _ = draw_negatives(rng_int, uids, 1, forbidden, pop_cdf, None, 0)
    rng_bpr = np.random.default_rng([cfg.seed, 3])
    bpr_negs, _ = draw_negatives(rng_bpr, uids, 1, forbidden, pop_cdf, None, 0)
    bpr_pos_first = rng_bpr.random(len(uids)) < 0.5
    rng_mim = np.random.default_rng([cfg.seed, 4])

    by_task: dict[str, list[Spec]] = {t: [] for t in ("interaction", "topk", "retrieval", "rating", "mim", "bpr")}
    for r, (u, j, it) in enumerate(zip(t_uid, t_pos, t_iid)):
        seq = train_items[u]
        hist = _recent(seq[:j], cfg.history_len)
        by_task["interaction"].append(Spec("interaction", u, it, hist, label=1))
        by_task["interaction"].append(Spec("interaction", u, int(int_negs[r, 0]), hist, label=0))
        by_task["topk"].append(Spec("topk", u, it, hist, candidates=topk_cands[r], label_index=topk_label[r],
                                    show_candidates=True))
        by_task["retrieval"].append(Spec("retrieval", u, it, hist))
        if has_rating:
            by_task["rating"].append(Spec("rating", u, it, hist, rating=t_rating[r]))
        window = _recent(seq[:j + 1], cfg.history_len)
        m = int(rng_mim.integers(len(window)))
        by_task["mim"].append(Spec("mim", u, window[m], window, mask_pos=m))
        pair = [it, int(bpr_negs[r, 0])] if bpr_pos_first[r] else [int(bpr_negs[r, 0]), it]
        by_task["bpr"].append(Spec("bpr", u, it, hist, candidates=pair, label_index=pair.index(it),
                                   show_candidates=True))
    return [sp for t in by_task for sp in by_task[t]]


def _mlm_specs(titles: list[str], descs: list[str], cfg: PromptsConfig) -> list[Spec]:
    rng = np.random.default_rng([cfg.seed, 5])
    words = [(t + (". " + d if d else "")).split()[:cfg.mlm_max_words] for t, d in zip(titles, descs)]
    ok = np.array([i for i, w in enumerate(words) if len(w) >= 2], dtype=np.int64)
    if cfg.mlm_max_items is not None and len(ok) > cfg.mlm_max_items:
        ok = np.sort(rng.choice(ok, cfg.mlm_max_items, replace=False))
    out = []
    for i in ok.tolist():
        w = words[i]
        k = min(max(1, int(round(cfg.mlm_mask_prob * len(w)))), len(w) - 1)
        masked = set(rng.choice(len(w), k, replace=False).tolist())
        text = " ".join(MASK if p in masked else x for p, x in enumerate(w))
        answer = " ".join(x for p, x in enumerate(w) if p in masked)
        out.append(Spec("mlm", -1, i, text=text, answer=answer))
    return out


def _eval_specs(split: str, sets: dict[str, pa.Table], target_items: dict[int, np.ndarray],
                target_ratings: dict[int, np.ndarray], history: dict[int, np.ndarray],
                cfg: PromptsConfig, has_rating: bool) -> list[Spec]:
    def hist(u: int) -> list[int]:
        if u not in history:
            raise PipelineError(f"negatives {split}_*.parquet: uid {u} has no {split} interaction "
                                f"(negatives are out of step with the split, re-run negatives)")
        return _recent(history[u], cfg.history_len)

    def target(u: int, where: str) -> int:
        if u not in target_items:
            raise PipelineError(f"negatives {split}_{where}.parquet: uid {u} has no {split} interaction "
                                f"(negatives are out of step with the split, re-run negatives)")
        if len(target_items[u]) != 1:
            raise PipelineError(f"split {split}.parquet: uid {u} has {len(target_items[u])} rows, expected 1")
        return int(target_items[u][0])

    out: list[Spec] = []
    for row in sets[f"{split}_binary"].select(["uid", "iid", "label"]).to_pylist():
        u = row["uid"]
        if row["label"] == 1 and row["iid"] != target(u, "binary"):
            raise PipelineError(f"negatives {split}_binary.parquet: positive of uid {u} is not its {split} item")
        out.append(Spec("interaction", u, row["iid"], hist(u), label=int(row["label"])))
    for proto in ("topk", "ranking"):
        t = sets[f"{split}_{proto}"].select(["uid", "pos_iid", "candidates", "label_index"]).to_pylist()
        for row in t:
            u = row["uid"]
            if row["pos_iid"] != target(u, proto) or row["candidates"][row["label_index"]] != row["pos_iid"]:
                raise PipelineError(f"negatives {split}_{proto}.parquet: positive of uid {u} is not its "
                                    f"{split} item (re-run negatives)")
            out.append(Spec(proto, u, row["pos_iid"], hist(u), candidates=row["candidates"],
                            label_index=int(row["label_index"]), show_candidates=proto == "topk"))
    for u in sorted(target_items):
        out.append(Spec("retrieval", u, target(u, "retrieval"), hist(u)))
    if has_rating:
        for u in sorted(target_items):
            out.append(Spec("rating", u, target(u, "rating"), hist(u), rating=float(target_ratings[u][0])))
    order = {t: k for k, t in enumerate(REC_TASKS)}
    return sorted(out, key=lambda sp: order[sp.task])  # stable: within a task, file order


def check_leakage(specs: dict[str, list[Spec]], heldout: dict[int, set[int]],
                  test_items: dict[int, set[int]]) -> None:
    """A user's valid/test items never anywhere in their train rows (not a target, a positive, a
    history item, a candidate nor a negative); the test item never anywhere in valid rows."""
    for split, banned in (("train", heldout), ("valid", test_items)):
        for sp in specs[split]:
            if sp.uid < 0:
                continue
            bad = banned.get(sp.uid)
            if not bad:
                continue
            shown = {sp.iid, *sp.history, *sp.candidates}
            if bad & shown:
                raise PipelineError(f"leakage: a {split} {sp.task} sample of uid {sp.uid} holds one of its "
                                    f"held-out items {sorted(bad & shown)}")


# ---------------------------------------------------------------- rendering

class Renderer:
    def __init__(self, titles: list[str], domain: Domain, cfg: PromptsConfig, tokens: bool):
        self.tokens, self.domain, self.cfg = tokens, domain, cfg
        self.short = [" ".join(t.split()[:cfg.title_max_words]) if cfg.title_max_words else " ".join(t.split())
                      for t in titles]

    def item(self, k: int) -> str:
        return item_text(k, self.tokens)

    def labelled(self, k: int) -> str:
        t = self.short[k]
        return f"{self.item(k)} ({t})" if t else self.item(k)

    def candidate(self, k: int) -> str:
        return self.labelled(k) if self.cfg.candidate_titles else self.item(k)

    def user(self, u: int) -> str:
        """The user as a sentence subject: 'User <uid_3>' or 'User 3'."""
        t = user_text(u, self.tokens)
        return f"User {t}" if self.tokens else t[:1].upper() + t[1:]

    def history(self, sp: Spec) -> tuple[str, bool]:
        """Rendered history, oldest dropped first to fit max_history_chars; (text, truncated)."""
        parts = [MASK if p == sp.mask_pos else self.labelled(k) for p, k in enumerate(sp.history)]
        keep = list(range(len(parts)))
        budget = self.cfg.max_history_chars
        truncated = False
        while budget is not None and len(keep) > 1 and len(", ".join(parts[p] for p in keep)) > budget:
            drop = next(p for p in keep if p != sp.mask_pos)  # the masked slot stays
            keep.remove(drop)
            truncated = True
        return ", ".join(parts[p] for p in keep), truncated

    def pair_prefix(self, head: str) -> str:
        """The interaction question of a row's user and history up to the item: the prompt of
        the pair (u, k) is `pair_prefix + pair_suffix(k)`, for any item k. BDLM's DRS reads the
        LLM feature h of each (user, candidate) pair from it (docs/design.md eq. 4)."""
        return f"{head} Predict if he/she will {self.domain.do}"

    def pair_suffix(self, k: int) -> str:
        return f" {self.labelled(k)} next. Answer:"

    def render(self, sp: Spec) -> tuple[str, str, bool, str]:
        """(prompt, answer, history truncated, pair prefix: '' for rows without a user history)."""
        d = self.domain
        if sp.task == "mlm":
            return (f"Some words of the text of {self.item(sp.iid)} are replaced by {MASK}: "
                    f"{sp.text} Which words are masked? Answer:", sp.answer, False, "")
        hist, truncated = self.history(sp)
        head = f"{self.user(sp.uid)} has {d.did} the following {d.nouns} {hist}." if hist else \
            f"{self.user(sp.uid)} has not {d.did} any {d.nouns} yet."
        he = "he/she"
        prefix = self.pair_prefix(head)
        if sp.task == "interaction":  # the pair prompt itself
            return prefix + self.pair_suffix(sp.iid), "Yes" if sp.label == 1 else "No", truncated, prefix
        elif sp.task == "topk":
            cands = ", ".join(self.candidate(k) for k in sp.candidates)
            q = f"Predict which 1 {d.noun} in candidate set will {he} {d.do} most probably? Candidates: {cands}."
            answer = self.item(sp.iid)
        elif sp.task in ("retrieval", "ranking"):
            q = f"Predict the next {d.noun} {he} will {d.do}."
            answer = self.item(sp.iid)
        elif sp.task == "rating":
            q = f"How will {self.user(sp.uid)[:1].lower() + self.user(sp.uid)[1:]} rate " \
                f"{self.labelled(sp.iid)}? Answer with 1-5."
            answer = rating_digit(sp.rating)
        elif sp.task == "mim":
            q = f"Predict the {d.noun} replaced by {MASK}."
            answer = self.item(sp.iid)
        elif sp.task == "bpr":
            a, b = (self.candidate(k) for k in sp.candidates)
            q = f"Which {d.noun} will {he} prefer to {d.do} next: {a} or {b}?"
            answer = self.item(sp.iid)
        else:  # pragma: no cover - specs only hold known tasks
            raise PipelineError(f"unknown task {sp.task!r}")
        tail = user_at_answer(self.user(sp.uid)) if self.cfg.user_token_at_answer else "Answer:"
        return f"{head} {q} {tail}", answer, truncated, prefix


def user_at_answer(user: str) -> str:
    """The prompt's closing words under prompts.user_token_at_answer: the user ("User <uid_3>",
    "User 3") named again right before the answer position, whose hidden state the answer is
    read from ("... Answer for user <uid_3>:"), so that state can attend to the user's token at
    a distance of one; the default ends with "Answer:" and names the user only at the start.
    Interaction rows keep "Answer:": their prompt is the pair prompt, prefix + the item's
    suffix, which BDLM's DRS reads for any item and so cannot name the user after the item."""
    return f"Answer for {user[:1].lower() + user[1:]}:"


def render_table(specs: list[Spec], renderer: Renderer) -> tuple[pa.Table, dict]:
    cols: dict[str, list] = {f.name: [] for f in SCHEMA}
    truncated = 0
    for sp in specs:
        prompt, answer, cut, prefix = renderer.render(sp)
        truncated += cut
        cols["pair_prefix"].append(prefix)
        cols["task"].append(sp.task)
        cols["family"].append(FAMILY[sp.task])
        cols["prompt"].append(prompt)
        cols["answer"].append(answer)
        cols["uid"].append(sp.uid)
        cols["iid"].append(sp.iid)
        cols["candidates"].append(sp.candidates)
        cols["label_index"].append(sp.label_index)
        cols["label"].append(sp.label)
        cols["rating"].append(sp.rating)
    table = pa.table(cols, schema=SCHEMA)
    lengths = [len(p) for p in cols["prompt"]]
    by_task: dict[str, list[int]] = {}
    for t, n in zip(cols["task"], lengths):
        by_task.setdefault(t, []).append(n)
    stats = {"rows": table.num_rows, "histories_truncated": truncated,
             "mean_prompt_chars": float(np.mean(lengths)) if lengths else 0.0,
             "max_prompt_chars": int(max(lengths)) if lengths else 0,
             "counts": {t: len(v) for t, v in by_task.items()},
             "mean_prompt_chars_by_task": {t: float(np.mean(v)) for t, v in by_task.items()}}
    return table, stats


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
