"""Shared by the checkpoint worker scripts and tests: tiny HF configs of each family, megatron
setup under torchrun (gloo, CPU), and a single-stage megatron forward."""

from __future__ import annotations

import json
from typing import Any

import torch

# name -> (HF config class name, extra kwargs). Vocab 100 is padded to 128 in megatron.
FAMILIES: dict[str, tuple[str, dict[str, Any]]] = {
    "llama": ("LlamaConfig", {}),
    "llama_tied": ("LlamaConfig", {"tie_word_embeddings": True}),
    "llama3_rope": (
        "LlamaConfig",
        {
            "rope_scaling": {
                "rope_type": "llama3",
                "factor": 8.0,
                "low_freq_factor": 1.0,
                "high_freq_factor": 4.0,
                "original_max_position_embeddings": 32,
            },
            "rope_theta": 500000.0,
            "tie_word_embeddings": True,
        },
    ),
    "qwen2": ("Qwen2Config", {}),
    "qwen2_tied": ("Qwen2Config", {"tie_word_embeddings": True}),
    "qwen3": ("Qwen3Config", {"head_dim": 32}),
    "qwen3_tied": ("Qwen3Config", {"head_dim": 32, "tie_word_embeddings": True}),
}


def tiny_hf_config(family: str, **overrides: Any) -> Any:
    import transformers

    cls_name, extra = FAMILIES[family]
    kw: dict[str, Any] = dict(
        hidden_size=64,
        num_attention_heads=4,
        num_key_value_heads=2,
        num_hidden_layers=2,
        intermediate_size=128,
        vocab_size=100,
        max_position_embeddings=256,
        rms_norm_eps=1e-5,
    )
    kw.update(extra)
    kw.update(overrides)
    return getattr(transformers, cls_name)(**kw)


def tiny_hf_model(family: str, seed: int = 0, **overrides: Any) -> Any:
    """A random-init HF causal LM (fp32, eval) with non-trivial norm weights and biases."""
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(tiny_hf_config(family, **overrides))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight") or name.endswith(".bias"):
                p.copy_(1.0 + 0.1 * torch.randn_like(p) if "norm" in name else torch.randn_like(p))
    return model.float().eval()


def tokens(batch: int = 2, seq: int = 24, vocab: int = 100, seed: int = 1) -> torch.Tensor:
    return torch.randint(0, vocab, (batch, seq), generator=torch.Generator().manual_seed(seed))


def setup_megatron(tp: int = 1, pp: int = 1, seed: int = 1234) -> None:
    """Init gloo from torchrun's env, the CPU compat layer and megatron's parallel state."""
    import torch.distributed as dist
    from megatron.core import parallel_state
    from megatron.core.tensor_parallel.random import model_parallel_cuda_manual_seed

    from nemo_rence.infra import cpu_compat

    cpu_compat.enable()
    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    parallel_state.initialize_model_parallel(tp, pp)
    model_parallel_cuda_manual_seed(seed)


def teardown_megatron() -> None:
    import torch.distributed as dist
    from megatron.core import parallel_state

    parallel_state.destroy_model_parallel()
    dist.destroy_process_group()


@torch.no_grad()
def megatron_logits(model: Any, ids: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """Logits [b, s, vocab_size] of a single-stage (PP=1) GPTModel, TP-gathered, padding dropped."""
    from megatron.core import parallel_state
    from megatron.core.tensor_parallel import gather_from_tensor_model_parallel_region

    model.eval()
    pos = torch.arange(ids.shape[1]).unsqueeze(0).expand_as(ids)
    logits = model(input_ids=ids, position_ids=pos, attention_mask=None)
    if parallel_state.get_tensor_model_parallel_world_size() > 1:
        logits = gather_from_tensor_model_parallel_region(logits)
    return logits[..., :vocab_size].float()


def emit(result: dict[str, Any]) -> None:
    """Print a result line that the calling test parses with :func:`parse`.

    One ``os.write`` of a whole line (atomic on a pipe below 4 KiB), so lines of two ranks
    sharing stdout never interleave.
    """
    import os
    import sys

    sys.stdout.flush()
    line = "\nCKPT_RESULT " + json.dumps(result) + "\n"
    if len(line.encode()) >= 4096:
        raise ValueError("result too long for one atomic write")
    os.write(sys.stdout.fileno(), line.encode())


def parse(output: str) -> list[dict[str, Any]]:
    return [
        json.loads(line.removeprefix("CKPT_RESULT "))
        for line in output.splitlines()
        if line.startswith("CKPT_RESULT ")
    ]


@torch.no_grad()
def pipeline_logits(model: Any, ids: torch.Tensor, vocab_size: int) -> torch.Tensor | None:
    """Logits of a PP-staged GPTModel via megatron's forward-only pipeline schedule.

    Returns the logits on the last pipeline stage (TP-gathered, padding dropped), None elsewhere.
    """
    from functools import partial

    from megatron.core import parallel_state
    from megatron.core.pipeline_parallel import get_forward_backward_func
    from megatron.core.tensor_parallel import gather_from_tensor_model_parallel_region

    model.eval()
    pos = torch.arange(ids.shape[1]).unsqueeze(0).expand_as(ids)

    def collect(output: torch.Tensor, non_loss_data: bool = False) -> torch.Tensor:
        return output

    def forward_step(data_iterator: Any, m: Any) -> tuple[torch.Tensor, Any]:
        batch = next(data_iterator)
        return m(input_ids=batch, position_ids=pos, attention_mask=None), partial(collect)

    out = get_forward_backward_func()(
        forward_step_func=forward_step,
        data_iterator=iter([ids]),
        model=[model],
        num_microbatches=1,
        seq_length=ids.shape[1],
        micro_batch_size=ids.shape[0],
        forward_only=True,
        collect_non_loss_data=True,
    )
    if not parallel_state.is_pipeline_last_stage():
        return None
    logits = out[0]
    if parallel_state.get_tensor_model_parallel_world_size() > 1:
        logits = gather_from_tensor_model_parallel_region(logits)
    return logits[..., :vocab_size].float()
