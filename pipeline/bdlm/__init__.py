"""BDLM joint training: deep mutual learning between the LLM and a domain model (DRS).

docs/design.md, "The BDLM method", eq. 4-7 and Algorithm 1:

- **Sharing module M** (`Sharing`): a user table and an item table in the LLM hidden space
  (h), initialised from the LLM's pre-loaded `<uid_k>`/`<iid_k>` rows. They are buffers, not
  parameters: no optimizer owns them, each side *writes* its rows into them after its step
  and reads them (detached) as the target of its mutual-learning loss L_ml, read per row
  (`row_distance`: squared distance summed over the hidden dims, averaged over the rows, so
  lambda means what the paper's {0, 1e-3, ..., 10} means).
- **DRS with LLM knowledge** (`DRS`, eq. 4): score = sigmoid(w^T [h ; f_Phi(u, i)] + b), h the
  LLM's top-layer feature of the (u, i) pair prompt (`features.pair_features`: a row's user
  and history prefix read once, each item's suffix after it; top-K gets one h per
  candidate), f_Phi the domain model's `pair_features`. The head starts as the domain model
  itself (w_h = 0), so step 0 scores exactly as the pretrained model. The DRS reaches M
  through its own learned projection P: d -> h.
- **Alternation** (`JointTrainer`, Algorithm 1 on shared instances): per step one batch of
  instances (u, i, prompt, label); (a) the LLM steps on them (L_llm + lambda L_ml^llm) and
  writes its rows for their users/items into M; (b) the DRS steps on the same instances, h
  from the just-updated LLM, on BCE + its domain model's own objective (BPR for LightGCN) +
  lambda L_ml^drs, and writes its rows; then drs_per_llm - 1 cheaper DRS steps on a pool of
  instances whose h is cached per LLM snapshot (refreshed every refresh_every steps).
- **Selection on valid**: a DRS snapshot is kept at step 0 and every refresh; at the end
  each is scored on the valid top-K rows of the evaluated users with h from the final LLM
  and the best (NDCG@20, ties to the earliest) is kept, so BDLM-drs is never below the
  pretrained domain model on valid. The fusion head is fit on training pairs (which the
  domain model was trained on); selection on valid is what guards against its overfitting.

The LLM update is sft's (batches, AdamW, cosine schedule, accelerate), so the same command
line trains it on a CPU, one GPU, or several under DeepSpeed ZeRO-3:
`accelerate launch --config_file configs/accelerate_zero3.yaml -m stages.joint_train <ds> <exp>`.
The DRS and M stay on the CPU (small), replicated on every process.
"""
from pipeline.bdlm.drs import (DRS, check_id_spaces, evaluate_drs, initial_projection, llm_features, load_drs,
                               pair_h_by_prefix, save_drs)
from pipeline.bdlm.features import PairPrompts, pair_features
from pipeline.bdlm.sharing import LLMRows, Sharing, shared_tables
from pipeline.bdlm.train import POOLING, SHARE, JointConfig, JointData, JointTrainer, SelectionSet, row_distance

__all__ = ["DRS", "JointConfig", "JointData", "JointTrainer", "LLMRows", "POOLING", "PairPrompts", "SHARE",
           "SelectionSet", "Sharing", "check_id_spaces", "evaluate_drs", "initial_projection", "llm_features",
           "load_drs", "pair_features", "pair_h_by_prefix", "row_distance", "save_drs", "shared_tables"]
