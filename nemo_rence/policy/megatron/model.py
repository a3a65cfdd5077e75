"""Build a Megatron-Core ``GPTModel`` for a Hugging Face decoder architecture.

:func:`build_gpt_model` builds the ``TransformerConfig`` + ``GPTModel`` for this rank of the
current megatron parallel state (tensor / pipeline parallel sizes from ``parallel_state``), with
the Transformer Engine layer spec on GPU or the local (pure PyTorch) spec on CPU, from the
framework-neutral :class:`nemo_rence.arch.ArchSpec` (read from a Hugging Face config).

Vocabulary padding: the model is built with ``arch.padded_vocab_size()`` rows (see
:mod:`nemo_rence.arch`: the same at every TP size). The padded rows are zero on import and dropped
on export (``checkpoint.mapping``); their logits (always 0 for the zero output rows) must be
ignored: consumers slice ``logits[..., :arch.vocab_size]`` or mask the padded ids to ``-inf``
before a softmax.

Llama-3 rope scaling: megatron-core's own ``rope_scaling`` option hard-codes
``low_freq_factor=1, high_freq_factor=4, original_max_position_embeddings=8192``; this module
instead overwrites the model's rotary inverse frequencies with :func:`rope_inv_freq`, which
follows the HF config's values exactly.

Example::

    from transformers import AutoConfig
    arch = ArchSpec.from_hf_config(AutoConfig.from_pretrained(hf_dir))
    parallel_state.initialize_model_parallel(tp, pp)
    model = build_gpt_model(arch, pre_process=is_first_stage, post_process=is_last_stage)
"""

from __future__ import annotations

import dataclasses
import importlib.util
import math
from typing import Any

import torch
import torch.nn.functional as F

from nemo_rence.arch import ArchSpec

__all__ = [
    "SequenceParallelRMSNorm",
    "build_gpt_model",
    "build_transformer_config",
    "resolve_spec",
    "rope_inv_freq",
]


def rope_inv_freq(arch: ArchSpec) -> torch.Tensor:
    """Rotary inverse frequencies ``[head_dim // 2]`` (fp32), with llama3 scaling if configured.

    Computed exactly as transformers does (``modeling_rope_utils``), so that megatron and HF
    rotate by the same angles.
    """
    dim = arch.head_dim
    exponents = torch.arange(0, dim, 2, dtype=torch.int64).to(torch.float) / dim
    inv_freq = 1.0 / (arch.rope_theta**exponents)
    s = arch.rope_scaling
    if s is None:
        return inv_freq
    low_freq_wavelen = s.original_max_position_embeddings / s.low_freq_factor
    high_freq_wavelen = s.original_max_position_embeddings / s.high_freq_factor
    wavelen = 2 * math.pi / inv_freq
    # Long wavelengths are divided by the factor, short ones kept, the middle band interpolated.
    scaled = torch.where(wavelen > low_freq_wavelen, inv_freq / s.factor, inv_freq)
    smooth = (s.original_max_position_embeddings / wavelen - s.low_freq_factor) / (
        s.high_freq_factor - s.low_freq_factor
    )
    smoothed = (1 - smooth) * scaled / s.factor + smooth * scaled
    is_medium = ~(wavelen < high_freq_wavelen) * ~(wavelen > low_freq_wavelen)
    return torch.where(is_medium, smoothed, scaled)


def _te_available() -> bool:
    return torch.cuda.is_available() and importlib.util.find_spec("transformer_engine") is not None


def resolve_spec(spec: str) -> str:
    """``'auto'`` -> ``'te'`` when CUDA and Transformer Engine are available, else ``'local'``."""
    if spec not in ("auto", "te", "local"):
        raise ValueError(f"spec must be one of 'auto', 'te', 'local'; got {spec!r}")
    if spec == "auto":
        return "te" if _te_available() else "local"
    if spec == "te" and importlib.util.find_spec("transformer_engine") is None:
        raise ImportError(
            "spec='te' needs Transformer Engine, which is not installed: install the GPU extra "
            "(pip install 'nemo-rence[gpu]') or use spec='local'"
        )
    return spec


def build_transformer_config(
    arch: ArchSpec,
    *,
    params_dtype: torch.dtype = torch.float32,
    fp8: str | None = None,
    recompute: str | None = None,
    sequence_parallel: bool = False,
) -> Any:
    """The megatron ``TransformerConfig`` for ``arch`` under the current parallel state.

    Args:
        fp8: ``None``, ``'e4m3'`` or ``'hybrid'`` (Transformer Engine spec only).
        recompute: activation recomputation: ``None``, ``'selective'`` (attention core) or
            ``'full'`` (every layer, uniform method, one layer per unit).
        sequence_parallel: megatron sequence parallelism (needs tensor-parallel size > 1).
    """
    from megatron.core import parallel_state
    from megatron.core.transformer.transformer_config import TransformerConfig

    if recompute not in (None, "selective", "full"):
        raise ValueError(f"recompute must be None, 'selective' or 'full'; got {recompute!r}")
    if fp8 not in (None, "e4m3", "hybrid"):
        raise ValueError(f"fp8 must be None, 'e4m3' or 'hybrid'; got {fp8!r}")
    tp = parallel_state.get_tensor_model_parallel_world_size()
    pp = parallel_state.get_pipeline_model_parallel_world_size()
    for what, n in (
        ("num_attention_heads", arch.num_attention_heads),
        ("num_key_value_heads", arch.num_query_groups),
        ("intermediate_size", arch.ffn_hidden_size),
    ):
        if n % tp:
            raise ValueError(f"{what}={n} is not divisible by tensor-parallel size {tp}")
    if arch.num_layers % pp:
        raise ValueError(
            f"num_layers={arch.num_layers} is not divisible by pipeline-parallel size {pp}"
        )
    if sequence_parallel and tp < 2:
        raise ValueError(
            f"sequence_parallel needs tensor-parallel size > 1, got {tp}: it splits the sequence "
            "over the TP ranks"
        )
    on_gpu = torch.cuda.is_available()
    return TransformerConfig(
        num_layers=arch.num_layers,
        hidden_size=arch.hidden_size,
        num_attention_heads=arch.num_attention_heads,
        num_query_groups=arch.num_query_groups,
        kv_channels=arch.head_dim,
        ffn_hidden_size=arch.ffn_hidden_size,
        normalization="RMSNorm",
        layernorm_epsilon=arch.rms_norm_eps,
        gated_linear_unit=True,
        activation_func=F.silu,
        add_bias_linear=False,
        add_qkv_bias=arch.qkv_bias,
        qk_layernorm=arch.qk_layernorm,
        hidden_dropout=0.0,
        attention_dropout=0.0,
        tensor_model_parallel_size=tp,
        pipeline_model_parallel_size=pp,
        sequence_parallel=sequence_parallel,
        params_dtype=params_dtype,
        pipeline_dtype=params_dtype,
        bf16=params_dtype == torch.bfloat16,
        fp16=params_dtype == torch.float16,
        use_cpu_initialization=not on_gpu,
        # Fusions need CUDA kernels (apex / TE); the unfused paths are exact and run anywhere.
        bias_activation_fusion=False,
        masked_softmax_fusion=False,
        bias_dropout_fusion=False,
        apply_rope_fusion=False,
        gradient_accumulation_fusion=False,
        persist_layer_norm=False,
        fp8=fp8,
        recompute_granularity=recompute,
        recompute_method="uniform" if recompute == "full" else None,
        recompute_num_layers=1 if recompute == "full" else None,
    )


class SequenceParallelRMSNorm(torch.nn.RMSNorm):
    """``torch.nn.RMSNorm`` for megatron's local (pure PyTorch) layer spec under sequence
    parallelism.

    Megatron's own fallback (``WrappedTorchNorm``, used when apex is absent, i.e. on CPU)
    refuses ``sequence_parallel``. An RMSNorm is per token, so it runs unchanged on a sequence
    shard; only its weight gradient becomes partial (each TP rank saw its shard of the tokens).
    Marking the weight ``sequence_parallel`` makes megatron's ``finalize_model_grads`` all-reduce
    it over the TP group, exactly as for Transformer Engine's norms. ``shard_tokens=False`` (the
    per-head q/k norms, which see every token of the rank's heads) leaves the weight unmarked.
    Same parameter names and values as ``WrappedTorchNorm``, so checkpoints are unchanged.
    """

    def __init__(
        self, config: Any, hidden_size: int, eps: float = 1e-5, shard_tokens: bool = True, **_: Any
    ) -> None:
        super().__init__(hidden_size, eps=eps)
        self.weight.sequence_parallel = bool(config.sequence_parallel and shard_tokens)  # type: ignore[attr-defined]


def _local_spec_with_sequence_parallel_norms(config: Any, layer_spec: Any) -> Any:
    """The local layer spec with every ``WrappedTorchNorm`` swapped for
    :class:`SequenceParallelRMSNorm`, wrapped in block submodules so that the final norm is one
    too (the block would otherwise pick megatron's fallback norm). Apex's ``FusedLayerNorm``,
    megatron's choice when apex is installed, supports sequence parallelism and is kept."""
    from megatron.core.transformer.spec_utils import ModuleSpec
    from megatron.core.transformer.torch_norm import WrappedTorchNorm
    from megatron.core.transformer.transformer_block import (
        LayerNormImpl,
        TransformerBlockSubmodules,
        get_num_layers_to_build,
    )

    qk_norm = ModuleSpec(module=SequenceParallelRMSNorm, params={"shard_tokens": False})

    def swap(sub: Any, norm: Any) -> Any:
        return norm if sub is WrappedTorchNorm else sub

    layer = layer_spec.submodules
    attn = layer.self_attention
    attn_sub = dataclasses.replace(
        attn.submodules,
        q_layernorm=swap(attn.submodules.q_layernorm, qk_norm),
        k_layernorm=swap(attn.submodules.k_layernorm, qk_norm),
    )
    layer = dataclasses.replace(
        layer,
        input_layernorm=swap(layer.input_layernorm, SequenceParallelRMSNorm),
        self_attention=dataclasses.replace(attn, submodules=attn_sub),
        pre_mlp_layernorm=swap(layer.pre_mlp_layernorm, SequenceParallelRMSNorm),
    )
    spec = dataclasses.replace(layer_spec, submodules=layer)
    return TransformerBlockSubmodules(
        layer_specs=[spec] * get_num_layers_to_build(config),
        layer_norm=swap(LayerNormImpl, SequenceParallelRMSNorm),  # apex's norm (GPU) supports SP
    )


def build_gpt_model(
    arch: ArchSpec,
    *,
    pre_process: bool,
    post_process: bool,
    params_dtype: torch.dtype = torch.float32,
    spec: str = "auto",
    fp8: str | None = None,
    recompute: str | None = None,
    sequence_parallel: bool = False,
) -> Any:
    """Build this rank's ``GPTModel`` (its TP shard of its PP stage's layers).

    Megatron's parallel state must be initialised (``initialize_model_parallel``) and, on CPU,
    ``infra.cpu_compat.enable()`` called first. Weights are randomly initialised: load them
    with ``checkpoint.hf.load_hf_into_model`` or ``checkpoint.dist.load``.

    Args:
        arch: the architecture (:meth:`ArchSpec.from_hf_config`).
        pre_process: this stage holds the embedding (first PP stage).
        post_process: this stage holds the final norm and output layer (last PP stage).
        params_dtype: parameter dtype (fp32 on CPU; bf16 on GPU).
        spec: ``'te'`` (Transformer Engine layers), ``'local'`` (pure PyTorch megatron layers)
            or ``'auto'`` (te when CUDA and TE are available, else local).
        fp8: ``None`` | ``'e4m3'`` | ``'hybrid'``; needs the TE spec.
        recompute: ``None`` | ``'selective'`` | ``'full'`` activation recomputation.
        sequence_parallel: megatron sequence parallelism (TP > 1). With it, the sequence length
            of every forward must be a multiple of the TP size (the policy pads micro-batches).
    """
    from megatron.core import parallel_state
    from megatron.core.models.gpt import GPTModel

    spec = resolve_spec(spec)
    if fp8 is not None and spec != "te":
        raise ValueError("fp8 needs the Transformer Engine layer spec (spec='te' on a GPU)")
    config = build_transformer_config(
        arch,
        params_dtype=params_dtype,
        fp8=fp8,
        recompute=recompute,
        sequence_parallel=sequence_parallel,
    )
    layer_spec: Any
    if spec == "te":
        from megatron.core.models.gpt.gpt_layer_specs import (
            get_gpt_layer_with_transformer_engine_spec,
        )

        layer_spec = get_gpt_layer_with_transformer_engine_spec(qk_layernorm=arch.qk_layernorm)
    else:
        from megatron.core.models.gpt.gpt_layer_specs import get_gpt_layer_local_spec

        layer_spec = get_gpt_layer_local_spec(
            qk_layernorm=arch.qk_layernorm, normalization="RMSNorm"
        )
        if sequence_parallel:
            layer_spec = _local_spec_with_sequence_parallel_norms(config, layer_spec)
    tp = parallel_state.get_tensor_model_parallel_world_size()
    model = GPTModel(
        config=config,
        transformer_layer_spec=layer_spec,
        vocab_size=arch.padded_vocab_size(tp),
        max_sequence_length=arch.max_position_embeddings,
        pre_process=pre_process,
        post_process=post_process,
        share_embeddings_and_output_weights=arch.tie_word_embeddings,
        position_embedding_type="rope",
        rotary_base=arch.rope_theta,  # type: ignore[arg-type,unused-ignore]
        rotary_percent=1.0,
    )
    rope = getattr(model, "rotary_pos_emb", None)
    if rope is not None:
        # HF-exact frequencies (incl. llama3 scaling), set before the first (cached) forward.
        rope.inv_freq = rope_inv_freq(arch).to(rope.inv_freq.device)
    if torch.cuda.is_available():
        model = model.to(torch.cuda.current_device())
    return model
