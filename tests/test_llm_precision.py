"""pipeline/precision.py: one mixed-precision setting for SFT, scoring and joint training."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from accelerate.state import AcceleratorState

from pipeline.errors import PipelineError
from pipeline import precision
from pipeline.llm.scoring import ScoreConfig, Scorer
from pipeline.llm.sft import SFTConfig, train
from tests.llm_tiny import tiny_llama, tiny_tokenizer

PROMPTS = ["The user watched Toy Story (1995) and GoldenEye. Will the user watch Four Rooms? Answer Yes or No.",
           "Given the user's history, will the user interact with the item? Answer Yes or No."] * 4
ANSWERS = ["Yes", "No"] * 4


@pytest.fixture(scope="module")
def tok():
    return tiny_tokenizer()


def test_resolve_auto_follows_the_hardware(monkeypatch):
    monkeypatch.setattr(precision, "native_bf16", lambda device: True)
    assert precision.resolve("auto", "cpu") == "bf16"
    monkeypatch.setattr(precision, "native_bf16", lambda device: False)
    assert precision.resolve("auto", "cpu") == "no"
    assert precision.resolve("bf16", "cpu") == "bf16" and precision.resolve("no", "cpu") == "no"
    with pytest.raises(PipelineError, match=r"sft\.mixed_precision must be one of \['auto', 'no', 'bf16'\], got 'fp16'"):
        precision.resolve("fp16", "cpu", "sft.mixed_precision")


def test_native_bf16_reads_the_cpu_flags(monkeypatch):
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    assert not precision.native_bf16("cpu")
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True)
    assert precision.native_bf16("cpu")


def test_bf16_scoring_is_close_to_fp32_and_says_which(tok):
    model = tiny_llama(tok).eval()
    cols = torch.tensor([tok.convert_tokens_to_ids("Yes"), 5, 6])
    fp32 = Scorer(model, tok, ScoreConfig(batch_size=4, max_len=64, mixed_precision="no"))
    bf16 = Scorer(model, tok, ScoreConfig(batch_size=4, max_len=64, mixed_precision="bf16"))
    a, b = fp32.first_token(PROMPTS, cols), bf16.first_token(PROMPTS, cols)
    assert (fp32.precision, bf16.precision) == ("no", "bf16")
    assert a.dtype == b.dtype == np.float32
    assert not np.array_equal(a, b)  # bf16 really computed
    assert np.allclose(a, b, atol=0.1)
    assert np.allclose(fp32.sequence(PROMPTS, ANSWERS), bf16.sequence(PROMPTS, ANSWERS), atol=0.2)


def test_bf16_sft_trains_like_fp32_and_keeps_fp32_weights(tok):
    runs = {}
    for mp in ("no", "bf16"):
        AcceleratorState._reset_state()  # accelerate keeps one precision per process; a stage is one process
        cfg = SFTConfig(steps=30, batch_size=4, lr=3e-3, warmup_steps=1, max_len=64, mixed_precision=mp)
        runs[mp] = train(tiny_llama(tok), tok, PROMPTS, ANSWERS, cfg)
    (trained, history, stats), (_, fp32_history, fp32_stats) = runs["bf16"], runs["no"]
    assert (stats["precision"], fp32_stats["precision"]) == ("bf16", "no")
    assert all(p.dtype == torch.float32 for p in trained.parameters())
    first, last = history[0]["loss"], history[-1]["loss"]
    assert last < 0.7 * first, (first, last)
    assert last == pytest.approx(fp32_history[-1]["loss"], rel=0.2, abs=0.05)
    AcceleratorState._reset_state()


def test_fp32_scoring_ranks_do_not_depend_on_the_thread_count(tok):
    """The default scoring precision is fp32 (evaluate_llm.mixed_precision: no): under bf16 the
    answer head's near-ties flip (on 100 users one flip is a full point of HR@1). In fp32 the
    ranks must not depend on how many threads compute them."""
    from pipeline.eval.metrics import positive_rank

    model = tiny_llama(tok).eval()
    cols = torch.arange(3, 40)
    prompts = PROMPTS * 4
    threads = torch.get_num_threads()
    try:
        got = []
        for n in (1, 2):
            torch.set_num_threads(n)
            got.append(Scorer(model, tok, ScoreConfig(batch_size=3, max_len=64, mixed_precision="no"))
                       .first_token(prompts, cols))
    finally:
        torch.set_num_threads(threads)
    np.testing.assert_allclose(got[0], got[1], rtol=0, atol=1e-5)
    label = np.arange(len(prompts)) % len(cols)
    np.testing.assert_array_equal(positive_rank(got[0], label), positive_rank(got[1], label))
