"""Does the prompt carry the user to the answer position? A linear probe of the frozen LLM.

    python benchmarks/llm_probe.py                       # ml-100k, vocab pe, 300 test users (~4 min, 2 cores)
    python benchmarks/llm_probe.py --users 943 --tasks topk retrieval

Reads the pre-loaded model (data/llm/<ds>/vocab/pe: <uid_k>/<iid_k> rows from the domain
model) and the test prompts build_prompts wrote (data/prompts/<ds>/tokens/test.parquet). For
each prompt it caches the hidden state the answer is read from (the last layer's state at the
last prompt token, as scoring and BDLM's DRS read it) and fits ridge regressions (scikit-learn
RidgeCV, alpha chosen on the training users) from that state to
  (a) the user's pre-loaded row (the <uid_k> input embedding), and
  (b) the item softmax target (the output-head row of the held-out item's <iid_k> token),
on a seeded split of users (the held-out users never fit the probe). On the held-out users it
reports R^2 (variance-weighted over dims) and the mean cosine of prediction and target, and
the top-K HR@1 (1 + 19 test candidates) of scorers built from the state: the probe's user row
(or item row) dotted with the candidates' head rows; the frozen LLM's own answer logits; the
oracle (the true user row with the tied head: the domain model's ranking, since pre-loading
preserves its dot products); and chance. Each is run on the prompts as built and with the user
named again at the answer (`prompts.user_token_at_answer`, the same words `pipeline.llm.prompts.render`
renders), so the probe says whether that option makes the user readable where the answer is.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.llm.encoding import prompt_batch  # noqa: E402
from pipeline.llm.forward import prompt_forward  # noqa: E402
from pipeline.llm.tokens import user_text  # noqa: E402
from pipeline.llm.prompts.render import user_at_answer  # noqa: E402

ANSWER = "Answer:"


def with_user_at_answer(prompt: str, uid: int) -> str:
    """A prompt as build_prompts renders it (tokens) under prompts.user_token_at_answer."""
    if not prompt.endswith(ANSWER):
        raise ValueError(f"prompt does not end with {ANSWER!r}: {prompt[-40:]!r}")
    return prompt[:-len(ANSWER)] + user_at_answer(f"User {user_text(uid, True)}")


@torch.no_grad()
def answer_states(model, tokenizer, prompts: list[str], item_ids: torch.Tensor, batch_size: int = 16,
                  max_len: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """[n, hidden] answer-position states (float32) and [n, n_items] the model's logits over the
    item tokens there. Prompts are batched by length (less padding); output is in input order."""
    order = np.argsort([len(p) for p in prompts], kind="stable")
    states = [None] * len(prompts)
    logits = [None] * len(prompts)
    model.eval()
    for s in range(0, len(order), batch_size):
        idx = order[s:s + batch_size].tolist()
        batch, pos, _ = prompt_batch(tokenizer, [prompts[i] for i in idx], max_len)
        lg, h = prompt_forward(model, batch, pos, pooling="last")
        for k, i in enumerate(idx):
            states[i] = h[k].numpy()
            logits[i] = lg[k, item_ids].float().numpy()
    return np.stack(states), np.stack(logits)


def _r2_cos(pred: np.ndarray, true: np.ndarray) -> dict:
    from sklearn.metrics import r2_score

    cos = (pred * true).sum(1) / (np.linalg.norm(pred, axis=1) * np.linalg.norm(true, axis=1) + 1e-12)
    return {"r2": float(r2_score(true, pred, multioutput="variance_weighted")), "cosine": float(cos.mean())}


def _hr1(scores: np.ndarray, label_index: np.ndarray) -> float:
    return float(np.mean(np.argmax(scores, axis=1) == label_index))


def probe(states: np.ndarray, item_logits: np.ndarray, uids: np.ndarray, pos_iids: np.ndarray,
          candidates: np.ndarray, label_index: np.ndarray, user_rows: np.ndarray, item_rows: np.ndarray,
          head_rows: np.ndarray, holdout: float = 0.2, seed: int = 0) -> dict:
    """Fit the two ridge probes on one seeded share of users, report on the others (module doc).
    states [n, h]; item_logits [n, n_items]; uids, pos_iids, label_index [n]; candidates [n, c]
    (top-K candidates of each row's user, used for HR@1); user_rows [n_users, h] (input rows);
    item_rows / head_rows [n_items, h] (input rows / output-head rows of the item tokens)."""
    from sklearn.linear_model import RidgeCV
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    users = np.unique(uids)
    rng = np.random.default_rng(seed)
    test_users = rng.choice(users, max(1, int(round(holdout * len(users)))), replace=False)
    te = np.isin(uids, test_users)
    tr = ~te
    if tr.sum() < 2:
        raise ValueError("too few users to fit the probe")
    alphas = np.logspace(-3, 4, 15)
    out: dict = {"users_fit": int(len(np.unique(uids[tr]))), "users_heldout": int(len(np.unique(uids[te]))),
                 "hidden": int(states.shape[1])}
    cand_head = head_rows[candidates[te]]  # [n_te, c, h]
    preds = {}
    for name, target in (("user_row", user_rows[uids]), ("item_target", head_rows[pos_iids])):
        # states standardised per dim (fit users only), so the alpha grid means the same at any scale
        ridge = make_pipeline(StandardScaler(), RidgeCV(alphas=alphas)).fit(states[tr], target[tr])
        pred = ridge.predict(states[te])
        preds[name] = pred
        out[name] = {**_r2_cos(pred, target[te]), "alpha": float(ridge[-1].alpha_),
                     "train_r2": _r2_cos(ridge.predict(states[tr]), target[tr])["r2"]}
    lab = label_index[te]
    out["hr1"] = {
        "probe_user_row": _hr1(np.einsum("nh,nch->nc", preds["user_row"], cand_head), lab),
        "probe_item_target": _hr1(np.einsum("nh,nch->nc", preds["item_target"], cand_head), lab),
        "frozen_llm": _hr1(np.take_along_axis(item_logits[te], candidates[te], axis=1), lab),
        "oracle_user_row": _hr1(np.einsum("nh,nch->nc", user_rows[uids[te]], cand_head), lab),
        # the user-agnostic control: every held-out user scored by the fit users' mean row
        "mean_user_row": _hr1(np.einsum("h,nch->nc", user_rows[uids[tr]].mean(0), cand_head), lab),
        "chance": float(1.0 / candidates.shape[1]),
    }
    return out


def main() -> None:
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from pipeline import paths
    from pipeline.llm.base import load_base

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", default="ml-100k")
    p.add_argument("--vocab", default="pe")
    p.add_argument("--users", type=int, default=300, help="test users probed (a seeded subset; 0: all)")
    p.add_argument("--tasks", nargs="+", default=["retrieval", "topk"], choices=["retrieval", "topk"])
    p.add_argument("--holdout", type=float, default=0.2)
    p.add_argument("--seed", type=int, default=2024)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--out", default=None, help="write the figures as JSON here too")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    t0 = time.time()
    model_dir = paths.vocab_llm(args.dataset, args.vocab)
    info = json.loads((Path(model_dir) / "vocab.json").read_text())
    model, tok = load_base(model_dir)
    n_users, n_items = info["n_users"], info["n_items"]
    fu, fi = info["first_user_token_id"], info["first_item_token_id"]
    emb = model.get_input_embeddings().weight.detach().float().numpy()
    head = model.get_output_embeddings().weight.detach().float().numpy()
    user_rows, item_rows, head_rows = emb[fu:fu + n_users], emb[fi:fi + n_items], head[fi:fi + n_items]
    item_ids = torch.arange(fi, fi + n_items)

    test = pq.read_table(paths.prompts(args.dataset, "tokens") / "test.parquet")
    topk = test.filter(pc.equal(test["task"], "topk")).select(["uid", "candidates", "label_index", "iid"])
    cands = {u: (np.asarray(c), li, it) for u, c, li, it in zip(*(topk[c].to_pylist() for c in topk.column_names))}
    users = np.array(sorted(cands))
    if args.users and args.users < len(users):
        users = np.sort(np.random.default_rng(args.seed).choice(users, args.users, replace=False))
    report: dict = {"dataset": args.dataset, "vocab": args.vocab, "model": info["base"], "users": int(len(users)),
                    "tied_output_head": bool(info.get("tied_output_head")), "results": {}}
    keep = set(users.tolist())
    for task in args.tasks:
        rows = [r for r in test.filter(pc.equal(test["task"], task)).select(["uid", "iid", "prompt"]).to_pylist()
                if r["uid"] in keep]
        uids = np.array([r["uid"] for r in rows])
        pos = np.array([cands[u][2] for u in uids])
        c = np.stack([cands[u][0] for u in uids])
        li = np.array([cands[u][1] for u in uids])
        for option in ("as_built", "user_token_at_answer"):
            prompts = [r["prompt"] if option == "as_built" else with_user_at_answer(r["prompt"], r["uid"])
                       for r in rows]
            t1 = time.time()
            states, logits = answer_states(model, tok, prompts, item_ids, args.batch_size)
            res = probe(states, logits, uids, pos, c, li, user_rows, item_rows, head_rows, args.holdout, args.seed)
            res["forward_s"] = round(time.time() - t1, 1)
            res["mean_prompt_chars"] = round(float(np.mean([len(x) for x in prompts])), 1)
            report["results"][f"{task}/{option}"] = res
            print(f"[probe] {task:9s} {option:21s} user-row R^2 {res['user_row']['r2']:+.3f} "
                  f"cos {res['user_row']['cosine']:.3f} | item-target R^2 {res['item_target']['r2']:+.3f} "
                  f"cos {res['item_target']['cosine']:.3f} | HR@1 probe-user {res['hr1']['probe_user_row']:.3f} "
                  f"probe-item {res['hr1']['probe_item_target']:.3f} frozen {res['hr1']['frozen_llm']:.3f} "
                  f"oracle {res['hr1']['oracle_user_row']:.3f} mean-user {res['hr1']['mean_user_row']:.3f} chance {res['hr1']['chance']:.3f} "
                  f"({res['forward_s']} s)", flush=True)
    report["wall_s"] = round(time.time() - t0, 1)
    print(json.dumps(report, indent=1))
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
