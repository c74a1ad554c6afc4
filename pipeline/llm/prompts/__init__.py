"""Prompt/answer samples for LLM fine-tuning and evaluation (docs/design.md, "The DAG" and "Auxiliary tasks").

Rec tasks (family "rec"): BDLM's interaction prediction (Yes/No) and top-K (1 of 1+19
candidates), in the wording of the paper's Table 2; Cao et al.'s retrieval, ranking (the
retrieval prompt, the 1+99 candidates only in the `candidates` column) and rating.
Auxiliary tasks (family "aux", train split only): MIM (a masked history item), BPR (which
of two items the user prefers) and MLM over item text (Cao et al. 2024). Each task is one small
class in `tasks/`; the modules beside it hold what the tasks share: `schema` (names, the table
schema, the render-independent `Spec`), `config`, `inputs` (reading and checking the split,
the evaluation sets and the item texts), `train_users`, `leakage`, `render` (wording and the
two renders) and `build` (`build_all`, `item_tables`: what the stage calls).

Samples are built once as render-independent specs (which user, which items, which
negatives, which words are masked) and rendered twice: `tokens` (`<uid_k>`/`<iid_k>`) and
`text` ("user k"/"item k"), so both renders hold the same samples. Ids are always written
through pipeline.llm.tokens.

Leakage: train rows show the user's training items only (history, targets, MIM); their
negatives are drawn, as the evaluation sets' are, from items the user never interacted with in
any split, so a held-out valid/test item never appears in a training prompt, not even as a
negative. Valid rows condition on train items, test rows on train + valid. `check_leakage`
verifies this on every build.
"""
