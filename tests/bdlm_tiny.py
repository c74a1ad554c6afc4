"""Tiny BDLM setups shared by the BDLM, lineage and distributed tests: a 16-dim LLaMA and an
8-dim LightGCN / NCF over U users and I items, the prompt tables in the build_prompts contract,
a deterministic JointTrainer, and a project folder with every input joint_train reads."""
from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
import yaml
from safetensors.torch import save_file

from pipeline import lineage
from pipeline.bdlm import DRS, JointConfig, JointData, JointTrainer, LLMRows, SelectionSet, Sharing, initial_projection
from pipeline.llm.tokens import item_token, new_tokens, user_token
from pipeline.models.collaborative import LightGCN, NeuMF
from pipeline.models.data import Interactions
from tests.helpers import REPO
from tests.llm_tiny import tiny_llama, tiny_t5, tiny_tokenizer

U, I, HIDDEN, DIM = 8, 6, 16, 8


def liked(u: int) -> int:
    return u % 3


def split_table(n_per_user: int = 3) -> pa.Table:
    rows = [(u, (u + k) % I, k, u * 10 + k) for u in range(U) for k in range(n_per_user)]
    u, i, t, r = zip(*rows)
    return pa.table({"uid": pa.array(u, pa.int32()), "iid": pa.array(i, pa.int32()),
                     "rating": pa.array([4.0] * len(u), pa.float32()), "timestamp": pa.array(t, pa.int64()),
                     "raw_row": pa.array(r, pa.int64())})


def suffix(i: int) -> str:
    return f" {item_token(i)} next. Answer:"


SUFFIXES = [suffix(i) for i in range(I)]


def prompt_table(seed: int = 0) -> pa.Table:
    """Interaction rows (1/0) and top-K rows in the build_prompts contract (pair_prefix +
    an item's suffix is that pair's interaction prompt)."""
    rng = np.random.default_rng(seed)
    rows = []
    for u in range(U):
        hist = " ".join(item_token(liked(u)) for _ in range(3))
        prefix = f"User {user_token(u)} has watched {hist}. Will the user watch"
        pos, neg = liked(u), 3 + u % 3
        for iid, label in ((pos, 1), (neg, 0)):
            rows.append({"task": "interaction", "family": "rec", "answer": "Yes" if label else "No",
                         "prompt": prefix + suffix(iid), "pair_prefix": prefix,
                         "uid": u, "iid": iid, "candidates": [], "label_index": -1, "label": label, "rating": float("nan")})
        cands = rng.permutation(I).tolist()
        rows.append({"task": "topk", "family": "rec", "answer": item_token(pos), "uid": u, "iid": pos,
                     "prompt": f"User {user_token(u)} has watched {hist}. Candidates: "
                               + ", ".join(item_token(c) for c in cands) + ". Answer:", "pair_prefix": prefix,
                     "candidates": cands, "label_index": cands.index(pos), "label": -1, "rating": float("nan")})
    schema = pa.schema([("task", pa.string()), ("family", pa.string()), ("prompt", pa.string()),
                        ("answer", pa.string()), ("uid", pa.int32()), ("iid", pa.int32()),
                        ("candidates", pa.list_(pa.int32())), ("label_index", pa.int32()), ("label", pa.int8()),
                        ("rating", pa.float32()), ("pair_prefix", pa.string())])
    return pa.Table.from_pylist(rows, schema=schema)


def tokenizer():
    tok = tiny_tokenizer()
    tok.add_tokens(new_tokens(U, I))
    return tok


def domain(kind: str = "lightgcn"):
    torch.manual_seed(1)
    if kind == "ncf":
        return NeuMF(U, I, {"dim": DIM}).eval()
    m = LightGCN(U, I, {"dim": DIM, "n_layers": 2})
    m.attach(train_data())
    return m.eval()


def train_data() -> Interactions:
    return Interactions.from_table(split_table(), U, I)


CFG = JointConfig(steps=4, batch_size=3, drs_batch_size=3, drs_per_llm=2, drs_pool=6, refresh_every=2, lam=0.1,
                  warmup_steps=1, lr=1e-3, drs_lr=1e-2, drs_head_lr=1e-2, max_len=64, checkpoint_every=2, seed=7)


def trainer(cfg: JointConfig = CFG, kind: str = "lightgcn", sides=("llm", "drs"), params_hash=None,
            llm_kind: str = "llama", select: bool = True) -> JointTrainer:
    """A fresh, deterministic setup: the same weights every call."""
    tok = tokenizer()
    llm = tiny_llama(tok, hidden=HIDDEN) if llm_kind == "llama" else tiny_t5(tok, hidden=HIDDEN)
    rows = LLMRows(llm, tok.convert_tokens_to_ids(user_token(0)), tok.convert_tokens_to_ids(item_token(0)), U, I)
    dom = domain(kind)
    proj, _ = initial_projection(dom, rows, seed=2024)
    drs = DRS(dom, HIDDEN, proj)
    sharing = Sharing(rows.table("user"), rows.table("item"))
    data = JointData.build(prompt_table(), SUFFIXES, tok, llm_kind == "t5", {"interaction": 1.0, "topk": 1.0},
                           False, cfg)
    selection = SelectionSet.build(prompt_table(seed=1), data.pairs) if select else None
    return JointTrainer(llm, tok, drs, sharing, rows, data, cfg, params_hash, sides, train=train_data(),
                        selection=selection)


def make_project(root: Path, vocab_items: int = I) -> None:
    """The inputs joint_train reads, built from tiny models, under root/data."""
    d = root / "data"
    for s, t in (("train", split_table(3)), ("valid", split_table(1)), ("test", split_table(1))):
        (d / "split/tiny").mkdir(parents=True, exist_ok=True)
        pq.write_table(t, d / f"split/tiny/{s}.parquet")
    (d / "kcore/tiny").mkdir(parents=True)
    pq.write_table(pa.table({"uid": pa.array(range(U), pa.int32())}), d / "kcore/tiny/users.parquet")
    pq.write_table(pa.table({"iid": pa.array(range(I), pa.int32())}), d / "kcore/tiny/items.parquet")
    (d / "prompts/tiny/tokens").mkdir(parents=True)
    for s in ("train", "valid", "test"):
        pq.write_table(prompt_table(seed={"train": 0, "valid": 1, "test": 2}[s]), d / f"prompts/tiny/tokens/{s}.parquet")
    pq.write_table(pa.table({"iid": pa.array(range(I), pa.int32()), "pair_suffix": SUFFIXES}),
                   d / "prompts/tiny/tokens/items.parquet")
    tok = tokenizer()
    llm = tiny_llama(tok, hidden=HIDDEN)
    vocab = d / "llm/tiny/vocab/pe"
    llm.save_pretrained(vocab)
    tok.save_pretrained(vocab)
    # w/o ET's LLM: no id tokens (the prompts' ids are text to it; which words does not matter here)
    text_tok = tiny_tokenizer()
    text_vocab = d / "llm/tiny/vocab/text"
    tiny_llama(text_tok, hidden=HIDDEN).save_pretrained(text_vocab)
    text_tok.save_pretrained(text_vocab)
    (text_vocab / "vocab.json").write_text(json.dumps({"mode": "text", "id_maps": lineage.record("tiny", d / "kcore/tiny")}))
    (d / "prompts/tiny/text").mkdir(parents=True)
    for f in (d / "prompts/tiny/tokens").iterdir():
        (d / "prompts/tiny/text" / f.name).write_bytes(f.read_bytes())
    (vocab / "vocab.json").write_text(json.dumps({
        "n_users": U, "n_items": vocab_items, "first_user_token_id": tok.convert_tokens_to_ids(user_token(0)),
        "first_item_token_id": tok.convert_tokens_to_ids(item_token(0)), "seed": 2024, "preload_from": "lightgcn",
        "id_maps": lineage.record("tiny", d / "kcore/tiny")}))
    dom = domain()
    (d / "domain/tiny/lightgcn").mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in dom.state_dict().items()}, str(d / "domain/tiny/lightgcn/model.safetensors"))
    (d / "domain/tiny/lightgcn/config.json").write_text(json.dumps(
        {"model": "lightgcn", "dim": DIM, "n_layers": 2, "n_users": U, "n_items": I, "train": {},
         "id_maps": lineage.record("tiny", d / "kcore/tiny")}))
    params = {"domain": {"train": {"epochs": 1, "lr": 0.01, "weight_decay": 0.0, "patience": 1, "eval_every": 1,
                                   "seed": 1}, "lightgcn": {"dim": DIM, "n_layers": 2}},
              "evaluate_llm": {"max_users": 5, "seed": 3, "batch_size": 4, "mixed_precision": "auto"},
              "evaluation": {"confidence": 0.95, "bootstrap_samples": 200, "seed": 0},
              "joint": {"experiments": ["bdlm"], "lambda": 0.1,
                        "train": {**{k: v for k, v in CFG.__dict__.items() if k != "lam"}, "steps": 2,
                                  "task_weights": {"interaction": 1.0, "topk": 1.0}, "aux": False},
                        "experiment": {"bdlm": {"model": "lightgcn"}, "wo_et": {"model": "lightgcn", "vocab": "text"}}}}
    (root / "params.yaml").write_text(yaml.safe_dump(params))


# Each process: an interrupted run resumed from its checkpoint, and an uninterrupted one; the
# final LLM (gathered), DRS and M of both, and M's write journal, go to out/rank<r>.pt.
JOINT_SCRIPT = """
import sys
sys.path.insert(0, {repo!r})
from pathlib import Path
import torch
from tests.bdlm_tiny import trainer
out = Path({out!r})
first = trainer()
first.run(out / "ckpt", stop_after=3)
resumed = trainer()
resumed.run(out / "ckpt")
whole = trainer()
whole.run()
result = {{"rank": whole.acc.process_index, "world": whole.acc.num_processes,
          "distributed_type": str(whole.acc.distributed_type), "history": whole.history,
          "resumed_history": resumed.history, "writes": whole.m.writes}}
for name, t in (("whole", whole), ("resumed", resumed)):
    result[name] = {{"llm": {{k: v.clone() for k, v in t.llm_state_dict().items()}},
                    "drs": t.drs.state_dict(), "m": t.m.state_dict()}}
torch.save(result, out / f"rank{{result['rank']}}.pt")
"""


def launch(cmd: list[str], tmp_path: Path, env: dict[str, str], script_text: str = JOINT_SCRIPT) -> list[dict]:
    script = tmp_path / "run.py"
    script.write_text(script_text.format(repo=str(REPO), out=str(tmp_path)))
    res = subprocess.run(cmd + [str(script)], cwd=REPO, capture_output=True, text=True, timeout=600,
                         env={**os.environ, "OMP_NUM_THREADS": "1", **env})
    if res.returncode:  # the launcher's own traceback comes last: show the process's first
        err = res.stderr
        pytest.fail(res.stdout[-2000:] + err[err.find("Traceback"):][:6000])
    return [torch.load(p, weights_only=False) for p in sorted(tmp_path.glob("rank*.pt"))]


def assert_close(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k].float(), b[k].float(), rtol=0, atol=1e-6, msg=k)
