"""The sentence-embedding backend, on a tiny BERT built from a config (no real weights)."""
from __future__ import annotations

import numpy as np
import pytest

from pipeline.data.textsim import minilm_vectors, topk_neighbors


@pytest.fixture
def tiny_bert(tmp_path):
    import torch
    from transformers import BertConfig, BertModel, BertTokenizerFast

    words = ["star", "wars", "trek", "toy", "story", "love", "actually", "the", "empire"]
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words]
    (tmp_path / "vocab.txt").write_text("\n".join(vocab) + "\n")
    BertTokenizerFast(vocab_file=str(tmp_path / "vocab.txt")).save_pretrained(tmp_path)
    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=len(vocab), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                     intermediate_size=32, max_position_embeddings=64)
    BertModel(cfg).save_pretrained(tmp_path)
    return tmp_path


def test_minilm_vectors_are_normalised_and_padding_free(tiny_bert):
    titles = ["star wars", "star trek", "toy story", "love actually", "the empire", "star wars the empire"]
    v = minilm_vectors(titles, tiny_bert, batch_size=4)
    assert v.shape == (6, 16) and v.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, rtol=1e-5)
    # mean pooling ignores padding: a title embeds the same alone or in a padded batch
    alone = minilm_vectors(["star wars"], tiny_bert)
    np.testing.assert_allclose(alone[0], v[0], rtol=1e-4, atol=1e-5)
    nb = topk_neighbors(v, np.arange(6), 3)
    assert all(q not in nb[q] for q in range(6))
