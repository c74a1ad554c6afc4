"""BDLM joint training: deep mutual learning between the LLM and a domain model (DRS).

DESIGN.md, "The BDLM method, written out", steps 4-7 and Algorithm 1:

- **Sharing module M** (`Sharing`): a user table and an item table in the LLM hidden space
  (h), initialised from the LLM's pre-loaded `<uid_k>`/`<iid_k>` rows. They are buffers, not
  parameters: no optimizer owns them, each side *writes* its rows into them after its step
  and reads them (detached) as the target of its mutual-learning loss.
- **DRS with LLM knowledge** (`DRS`, eq. 4): score = sigmoid(w^T [h ; f_Phi(u, i)] + b), h the
  LLM's top-layer feature of the prompt (`llm_features`: the last non-pad prompt token's
  final hidden state, or the mean over prompt tokens), f_Phi the domain model's
  `pair_features` (LightGCN: propagated e_u * e_i; NCF: [GMF product ; last MLP layer]).
  The head starts as the domain model itself (w_f = its output weights, or ones for a
  dot-product model; w_h = 0), so step 0 scores exactly as the pretrained model. The DRS
  reaches M through its own learned projection P: d -> h (identity when d == h),
  initialised as the fixed orthonormal projection expand_vocab pre-loaded with, rescaled
  so P(E^drs) has the mean norm of the LLM's new rows.
- **Alternation** (`JointTrainer`): per step, (a) an LLM step on L_llm + lambda L_ml^llm
  (AdamW + cosine schedule, as in pipeline.llm.sft), then the LLM's rows for the batch's
  users/items are written into M; (b) `drs_per_llm` DRS steps on L_drs + lambda L_ml^drs
  (Adam), h computed by the just-updated LLM (detached: the LLM learns from its own loss
  only), then P(E^drs) rows written into M. Batches are pure functions of (seed, step), so
  a run resumed from a checkpoint ends bitwise where an uninterrupted one does.

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
