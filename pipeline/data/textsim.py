"""Nearest items by title text: TF-IDF cosine (default) or MiniLM sentence embeddings.

Both scale to millions of items: similarities are computed for a block of query rows at a
time (sparse x sparse for TF-IDF, dense block x items for embeddings) and reduced to the
top k per row before the next block, so no items x items matrix is ever built.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import scipy.sparse as sp
from sklearn.feature_extraction.text import TfidfVectorizer


def tfidf_vectors(texts: list[str], max_df: float = 0.01, min_max_df: int = 1000) -> sp.csr_matrix:
    """L2-normalised TF-IDF rows; an empty or stop-word-only title is an all-zero row.

    Terms found in more than max(max_df * items, min_max_df) titles are dropped: they say
    little about similarity, and their long posting lists would make the neighbour search
    quadratic on large catalogues ("edition", "vol" in a million book titles).
    """
    cap = max(int(max_df * len(texts)), min_max_df)
    vec = TfidfVectorizer(stop_words="english", sublinear_tf=True, dtype=np.float32,
                          max_df=cap if cap < len(texts) else 1.0)
    try:
        return vec.fit_transform(texts).tocsr()
    except ValueError:  # empty vocabulary: no item has a usable title
        return sp.csr_matrix((len(texts), 1), dtype=np.float32)


def minilm_vectors(texts: list[str], model_dir: Path, batch_size: int = 256) -> np.ndarray:
    """all-MiniLM-L6-v2 sentence embeddings: mean over tokens, L2-normalised (its pooling config)."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModel.from_pretrained(model_dir).eval()
    out = np.empty((len(texts), model.config.hidden_size), dtype=np.float32)
    with torch.inference_mode():
        for start in range(0, len(texts), batch_size):
            enc = tok(texts[start:start + batch_size], padding=True, truncation=True,
                      max_length=128, return_tensors="pt")
            hidden = model(**enc).last_hidden_state
            mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            mean = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            out[start:start + len(mean)] = torch.nn.functional.normalize(mean, dim=-1).numpy()
    return out


def topk_neighbors(vectors: sp.csr_matrix | np.ndarray, queries: np.ndarray, k: int,
                   block_nnz: int = 20_000_000) -> np.ndarray:
    """[len(queries), k] int32 most similar rows to each query row (itself excluded), -1 padded.

    Only positive similarities count as neighbours. Ties go to the lower row index, so the
    result is deterministic.
    """
    queries = np.asarray(queries, dtype=np.int64)
    out = np.full((len(queries), k), -1, dtype=np.int32)
    if len(queries) == 0 or k == 0:
        return out
    if sp.issparse(vectors):
        xt = vectors.T.tocsr()
        rows_per_block = _sparse_block_rows(vectors, queries, xt, block_nnz)
        for start in range(0, len(queries), rows_per_block):
            q = queries[start:start + rows_per_block]
            sims = (vectors[q] @ xt).tocsr()
            _sparse_topk(sims, q, k, out[start:start + len(q)])
    else:
        rows_per_block = max(1, block_nnz // max(1, vectors.shape[0]))
        for start in range(0, len(queries), rows_per_block):
            q = queries[start:start + rows_per_block]
            _dense_topk(vectors[q] @ vectors.T, q, k, out[start:start + len(q)])
    return out


def _sparse_block_rows(x: sp.csr_matrix, queries: np.ndarray, xt: sp.csr_matrix, budget: int) -> int:
    """Rows per block so that a block's product has about `budget` non-zeros (upper bound)."""
    sample = queries[:: max(1, len(queries) // 1000)]
    col_nnz = np.diff(xt.indptr)  # items containing each term
    per_row = [col_nnz[x.indices[x.indptr[r]:x.indptr[r + 1]]].sum() for r in sample]
    est = max(1.0, float(np.mean(per_row)) if per_row else 1.0)
    return int(max(1, min(len(queries), budget // est)))


_VAL_BITS = 22  # similarity quantised to 22 bits for the packed sort key (ties -> lower index)


def _sparse_topk(sims: sp.csr_matrix, q: np.ndarray, k: int, out: np.ndarray) -> None:
    rows = np.repeat(np.arange(sims.shape[0], dtype=np.int64), np.diff(sims.indptr))
    cols, vals = sims.indices.astype(np.int64), sims.data
    keep = (cols != q[rows]) & (vals > 0)
    rows, cols, vals = rows[keep], cols[keep], vals[keep]
    # One int64 key per entry (row | descending similarity | column) sorts in one pass,
    # several times faster than a three-key lexsort on hundreds of millions of entries.
    col_bits = max(1, int(sims.shape[1] - 1).bit_length())
    row_bits = max(1, int(sims.shape[0] - 1).bit_length())
    if row_bits + _VAL_BITS + col_bits > 63:
        order = np.lexsort((cols, -vals, rows))
    else:
        top = (1 << _VAL_BITS) - 1
        qval = top - np.minimum(np.round(np.minimum(vals, 1.0) * top), top).astype(np.int64)
        order = np.argsort((rows << (_VAL_BITS + col_bits)) | (qval << col_bits) | cols, kind="stable")
    rows, cols = rows[order], cols[order]
    starts = np.searchsorted(rows, np.arange(sims.shape[0]))
    rank = np.arange(len(rows)) - starts[rows]
    top = rank < k
    out[rows[top], rank[top]] = cols[top]


def _dense_topk(sims: np.ndarray, q: np.ndarray, k: int, out: np.ndarray) -> None:
    sims[np.arange(len(q)), q] = -np.inf
    sims[sims <= 0] = -np.inf
    kk = min(k, sims.shape[1] - 1)
    if kk <= 0:
        return
    part = np.argpartition(-sims, kk - 1, axis=1)[:, :kk]
    part_vals = np.take_along_axis(sims, part, axis=1)
    order = np.lexsort((part, -part_vals), axis=1)
    idx = np.take_along_axis(part, order, axis=1)
    vals = np.take_along_axis(part_vals, order, axis=1)
    out[:, :kk] = np.where(np.isfinite(vals), idx, -1)
