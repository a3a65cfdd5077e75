"""MegatronPolicy on GPU: TE layer spec, bf16, Megatron's distributed optimizer, NCCL.

Runs only with CUDA and Transformer Engine (``pytest -m gpu`` on a GPU node); one process per
GPU (up to 2, then TP = number of GPUs).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

from tests.helpers import torchrun

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(
        importlib.util.find_spec("transformer_engine") is None,
        reason="needs Transformer Engine (extra gpu)",
    ),
]

WORKERS = Path(__file__).parent / "workers"


def test_policy_trains_with_te_bf16_and_the_distributed_optimizer(tmp_path):
    nproc = max(1, min(2, torch.cuda.device_count()))
    log = torchrun(WORKERS / "policy_gpu.py", str(tmp_path), nproc=nproc)
    for name in (
        "gpu_logprobs_match_megatron_full_logits",
        "gpu_train_step_with_megatron_distributed_optimizer",
        "gpu_save_load_restores_weights_and_optimizer_state",
    ):
        assert f"CHECK {name} OK" in log, log[-4000:]
    if nproc == 2:  # TP=2: Transformer Engine's sequence-parallel path
        assert "CHECK gpu_sequence_parallel_matches_tp_at_tp2 OK" in log, log[-4000:]
