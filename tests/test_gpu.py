"""GPU smoke tests (marker `gpu`, deselected by default; run with `pytest -m gpu` on a CUDA
machine): SFT of a tiny LLaMA under `accelerate launch` with DeepSpeed ZeRO-3 and bf16, the
configuration the paper-scale runs use, then the gathered checkpoint loads back; BDLM joint
training under ZeRO-3 on every GPU. Not run by the sessions that wrote them (no GPU was lent)."""
from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
import torch

from tests.helpers import REPO

pytestmark = pytest.mark.gpu


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_sft_under_deepspeed_zero3(tmp_path):
    script = tmp_path / "run.py"
    script.write_text(textwrap.dedent(f"""
        import sys; sys.path.insert(0, {str(REPO)!r})
        from pipeline.llm.sft import SFTConfig, train
        from tests.llm_tiny import tiny_llama, tiny_tokenizer
        tok = tiny_tokenizer()
        prompts = ["User has watched movies. Answer:"] * 64
        answers = ["Yes"] * 64
        cfg = SFTConfig(steps=4, batch_size=4, lr=1e-3, warmup_steps=1, max_len=64, mixed_precision="bf16")
        _, history, _ = train(tiny_llama(tok, hidden=64), tok, prompts, answers, cfg, output_dir={str(tmp_path / "out")!r})
        assert history[-1]["loss"] < history[0]["loss"], history
    """))
    res = subprocess.run([sys.executable, "-m", "accelerate.commands.launch", "--config_file",
                          str(REPO / "configs/accelerate_zero3.yaml"), "--num_processes",
                          str(torch.cuda.device_count()), str(script)],
                         cwd=REPO, capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tmp_path / "out")
    assert all(torch.isfinite(p).all() for p in model.parameters())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_joint_training_under_deepspeed_zero3_on_every_gpu(tmp_path):
    """tests/bdlm_tiny.py's run (kill, resume, uninterrupted) sharded over the GPUs:
    every process ends with the same LLM, DRS and M, and the resumed run is the same run."""
    from tests.bdlm_tiny import assert_close, launch

    runs = launch([sys.executable, "-m", "accelerate.commands.launch", "--config_file",
                   str(REPO / "configs/accelerate_zero3.yaml"), "--num_processes", str(torch.cuda.device_count())],
                  tmp_path, {})
    assert len(runs) == torch.cuda.device_count()
    assert all(r["distributed_type"] == "DistributedType.DEEPSPEED" for r in runs)
    for r in runs:  # to 1e-6, not bitwise: CUDA's embedding backward accumulates with atomics
        for part in ("llm", "drs", "m"):
            assert_close(r["whole"][part], runs[0]["whole"][part])
            assert_close(r["resumed"][part], r["whole"][part])
