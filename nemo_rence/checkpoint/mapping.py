"""Names and layouts of weights: Hugging Face <-> Megatron-Core, TP sharding, PP layer indices.

This module is the single source of truth for how an HF decoder (Llama, Qwen2, Qwen3; see
``nemo_rence.arch.ArchSpec``) maps onto a megatron ``GPTModel``. Everything else
(``checkpoint.hf``, ``checkpoint.dist``, the policy's ``export_weights``, refit) goes through it.

Full tensors and global names
-----------------------------
"Full" megatron tensors are unsharded (as at TP=1) and named with the GLOBAL layer index,
``decoder.layers.{i}.…`` with ``0 <= i < num_layers``. A pipeline stage's own ``state_dict()``
uses LOCAL indices (``0 .. layers_on_stage - 1``); convert with :func:`to_global_name` /
:func:`to_local_name` and the stage's :func:`pp_layer_offset`.

Name map (``{i}`` = layer; ``local`` spec / ``te`` spec names where they differ)::

    HF                                         megatron
    model.embed_tokens.weight                  embedding.word_embeddings.weight     [V_pad, H]
    model.layers.{i}.input_layernorm.weight    decoder.layers.{i}.input_layernorm.weight          (local)
                                               decoder.layers.{i}.self_attention.linear_qkv.layer_norm_weight (te)
    model.layers.{i}.self_attn.{q,k,v}_proj.weight  decoder.layers.{i}.self_attention.linear_qkv.weight  (fused, below)
    model.layers.{i}.self_attn.{q,k,v}_proj.bias    decoder.layers.{i}.self_attention.linear_qkv.bias    (Qwen2)
    model.layers.{i}.self_attn.q_norm.weight   decoder.layers.{i}.self_attention.q_layernorm.weight (Qwen3)
    model.layers.{i}.self_attn.k_norm.weight   decoder.layers.{i}.self_attention.k_layernorm.weight (Qwen3)
    model.layers.{i}.self_attn.o_proj.weight   decoder.layers.{i}.self_attention.linear_proj.weight
    model.layers.{i}.post_attention_layernorm.weight  decoder.layers.{i}.pre_mlp_layernorm.weight        (local)
                                               decoder.layers.{i}.mlp.linear_fc1.layer_norm_weight  (te)
    model.layers.{i}.mlp.{gate,up}_proj.weight decoder.layers.{i}.mlp.linear_fc1.weight  [gate; up]
    model.layers.{i}.mlp.down_proj.weight      decoder.layers.{i}.mlp.linear_fc2.weight
    model.norm.weight                          decoder.final_layernorm.weight
    lm_head.weight                             output_layer.weight  [V_pad, H]  (untied only)

Fused QKV layout (megatron's per-query-group interleave)
--------------------------------------------------------
With ``nh`` query heads, ``ng`` key/value heads (groups), ``hpg = nh // ng`` query heads per group
and head size ``d``, ``linear_qkv.weight`` is ``[ng * (hpg + 2) * d, H]``: for each group ``g``
in order, the ``hpg`` query heads of that group, then the group's key head, then its value head.
Worked example, ``nh=4, ng=2, d=1`` (one row per head)::

    HF:        q_proj rows [q0, q1, q2, q3]   k_proj rows [k0, k1]   v_proj rows [v0, v1]
    megatron:  linear_qkv rows [q0, q1, k0, v0,   q2, q3, k1, v1]
                                 └─ group 0 ─┘    └─ group 1 ─┘

The bias (Qwen2) follows the same row order. Because whole groups are contiguous, TP splits
``linear_qkv`` by plain contiguous blocks of rows (rank r holds groups ``r*ng/tp ..``).

Fused gate/up (SwiGLU) and its TP sharding
------------------------------------------
``linear_fc1.weight`` is ``[2 * F, H] = [gate; up]`` at TP=1. Megatron computes
``silu(x1) * x2`` on each rank's LOCAL output halves, so TP rank ``r`` must hold
``[gate_r; up_r]`` (its slice of gate stacked on its slice of up) - NOT the ``r``-th contiguous
block of ``[gate; up]``. :func:`tp_shard` / :func:`tp_gather` implement this. Example F=4, tp=2::

    full [g0 g1 g2 g3 u0 u1 u2 u3]  ->  rank 0 [g0 g1 u0 u1], rank 1 [g2 g3 u2 u3]

Vocabulary padding
------------------
The embedding and output layer have ``arch.padded_vocab_size()`` rows (see
``nemo_rence.arch``); :func:`hf_to_megatron` appends zero rows, :func:`megatron_to_hf` drops
them. The output layer exists only when embeddings are untied; with tied embeddings and PP > 1,
the last stage's ``output_layer.weight`` is a copy of the embedding (see
``checkpoint.hf.megatron_state_for_rank``) and :func:`megatron_to_hf` skips it.

Partition dims (:func:`tp_partition_dim`): column-parallel (``linear_qkv``, ``linear_fc1``) dim 0;
row-parallel (``linear_proj``, ``linear_fc2``) dim 1; vocab-parallel (embedding, output layer)
dim 0; norms replicated (``None``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

import torch
from torch import Tensor

from nemo_rence.arch import ArchSpec

__all__ = [
    "SPECS",
    "CheckpointError",
    "expected_hf_shapes",
    "expected_megatron_shapes",
    "hf_to_megatron",
    "layer_index",
    "megatron_to_hf",
    "pp_layer_offset",
    "stage_layer_range",
    "to_global_name",
    "to_local_name",
    "tp_gather",
    "tp_partition_dim",
    "tp_shard",
]

SPECS = ("local", "te")

# Per-layer names (suffix after ``decoder.layers.{i}.`` / ``model.layers.{i}.``).
_LOCAL_INPUT_NORM = "input_layernorm.weight"
_TE_INPUT_NORM = "self_attention.linear_qkv.layer_norm_weight"
_LOCAL_MLP_NORM = "pre_mlp_layernorm.weight"
_TE_MLP_NORM = "mlp.linear_fc1.layer_norm_weight"
_QKV_W = "self_attention.linear_qkv.weight"
_QKV_B = "self_attention.linear_qkv.bias"
_PROJ = "self_attention.linear_proj.weight"
_QNORM = "self_attention.q_layernorm.weight"
_KNORM = "self_attention.k_layernorm.weight"
_FC1 = "mlp.linear_fc1.weight"
_FC2 = "mlp.linear_fc2.weight"
_EMB = "embedding.word_embeddings.weight"
_OUT = "output_layer.weight"
_FINAL_NORM = "decoder.final_layernorm.weight"

# megatron layer suffix -> HF layer suffix, for one-to-one tensors.
_SIMPLE_LAYER = {
    _LOCAL_INPUT_NORM: "input_layernorm.weight",
    _TE_INPUT_NORM: "input_layernorm.weight",
    _LOCAL_MLP_NORM: "post_attention_layernorm.weight",
    _TE_MLP_NORM: "post_attention_layernorm.weight",
    _PROJ: "self_attn.o_proj.weight",
    _QNORM: "self_attn.q_norm.weight",
    _KNORM: "self_attn.k_norm.weight",
    _FC2: "mlp.down_proj.weight",
}

_LAYER_RE = re.compile(r"^decoder\.layers\.(\d+)\.(.+)$")
_HF_LAYER_RE = re.compile(r"^model\.layers\.(\d+)\.(.+)$")


class CheckpointError(ValueError):
    """A checkpoint does not match the architecture (missing, unexpected or mis-shaped tensor)."""


def _shape_error(name: str, expected: Iterable[int], found: Iterable[int]) -> CheckpointError:
    return CheckpointError(
        f"tensor {name!r}: expected shape {tuple(expected)}, found {tuple(found)}"
    )


# --------------------------------------------------------------------------------------------
# Expected shapes
# --------------------------------------------------------------------------------------------


def expected_hf_shapes(arch: ArchSpec) -> dict[str, tuple[int, ...]]:
    """Every HF tensor of ``arch`` and its shape (``lm_head.weight`` only when untied)."""
    h, d, f = arch.hidden_size, arch.head_dim, arch.ffn_hidden_size
    nq, nkv = arch.num_attention_heads * d, arch.num_query_groups * d
    shapes: dict[str, tuple[int, ...]] = {"model.embed_tokens.weight": (arch.vocab_size, h)}
    for i in range(arch.num_layers):
        p = f"model.layers.{i}."
        shapes[p + "input_layernorm.weight"] = (h,)
        shapes[p + "self_attn.q_proj.weight"] = (nq, h)
        shapes[p + "self_attn.k_proj.weight"] = (nkv, h)
        shapes[p + "self_attn.v_proj.weight"] = (nkv, h)
        if arch.qkv_bias:
            shapes[p + "self_attn.q_proj.bias"] = (nq,)
            shapes[p + "self_attn.k_proj.bias"] = (nkv,)
            shapes[p + "self_attn.v_proj.bias"] = (nkv,)
        if arch.qk_layernorm:
            shapes[p + "self_attn.q_norm.weight"] = (d,)
            shapes[p + "self_attn.k_norm.weight"] = (d,)
        shapes[p + "self_attn.o_proj.weight"] = (h, nq)
        shapes[p + "post_attention_layernorm.weight"] = (h,)
        shapes[p + "mlp.gate_proj.weight"] = (f, h)
        shapes[p + "mlp.up_proj.weight"] = (f, h)
        shapes[p + "mlp.down_proj.weight"] = (h, f)
    shapes["model.norm.weight"] = (h,)
    if not arch.tie_word_embeddings:
        shapes["lm_head.weight"] = (arch.vocab_size, h)
    return shapes


def expected_megatron_shapes(arch: ArchSpec, spec: str = "local") -> dict[str, tuple[int, ...]]:
    """Every FULL megatron tensor of ``arch`` (global layer names) and its shape."""
    _check_spec(spec)
    h, d, f = arch.hidden_size, arch.head_dim, arch.ffn_hidden_size
    v = arch.padded_vocab_size()
    qkv_rows = arch.num_query_groups * (arch.heads_per_group + 2) * d
    shapes: dict[str, tuple[int, ...]] = {_EMB: (v, h)}
    for i in range(arch.num_layers):
        p = f"decoder.layers.{i}."
        shapes[p + (_LOCAL_INPUT_NORM if spec == "local" else _TE_INPUT_NORM)] = (h,)
        shapes[p + _QKV_W] = (qkv_rows, h)
        if arch.qkv_bias:
            shapes[p + _QKV_B] = (qkv_rows,)
        if arch.qk_layernorm:
            shapes[p + _QNORM] = (d,)
            shapes[p + _KNORM] = (d,)
        shapes[p + _PROJ] = (h, arch.num_attention_heads * d)
        shapes[p + (_LOCAL_MLP_NORM if spec == "local" else _TE_MLP_NORM)] = (h,)
        shapes[p + _FC1] = (2 * f, h)
        shapes[p + _FC2] = (h, f)
    shapes[_FINAL_NORM] = (h,)
    if not arch.tie_word_embeddings:
        shapes[_OUT] = (v, h)
    return shapes


def _check_spec(spec: str) -> None:
    if spec not in SPECS:
        raise ValueError(f"spec must be one of {SPECS}; got {spec!r}")


# --------------------------------------------------------------------------------------------
# HF -> megatron
# --------------------------------------------------------------------------------------------


def _fuse_qkv(q: Tensor, k: Tensor, v: Tensor, arch: ArchSpec) -> Tensor:
    """HF q/k/v (weights ``[rows, H]`` or biases ``[rows]``) -> megatron interleaved QKV."""
    ng, hpg, d = arch.num_query_groups, arch.heads_per_group, arch.head_dim
    tail = q.shape[1:]
    qg = q.reshape(ng, hpg * d, *tail)
    kg = k.reshape(ng, d, *tail)
    vg = v.reshape(ng, d, *tail)
    return torch.cat([qg, kg, vg], dim=1).reshape(ng * (hpg + 2) * d, *tail)


def _split_qkv(qkv: Tensor, arch: ArchSpec) -> tuple[Tensor, Tensor, Tensor]:
    """Inverse of :func:`_fuse_qkv`."""
    ng, hpg, d = arch.num_query_groups, arch.heads_per_group, arch.head_dim
    tail = qkv.shape[1:]
    grouped = qkv.reshape(ng, (hpg + 2) * d, *tail)
    q, k, v = torch.split(grouped, [hpg * d, d, d], dim=1)
    return (
        q.reshape(ng * hpg * d, *tail),
        k.reshape(ng * d, *tail),
        v.reshape(ng * d, *tail),
    )


def _pad_vocab(t: Tensor, arch: ArchSpec) -> Tensor:
    extra = arch.padded_vocab_size() - t.shape[0]
    if extra == 0:
        return t
    return torch.cat([t, t.new_zeros((extra, *t.shape[1:]))], dim=0)


def _shape_of(sd: Mapping[str, Tensor], name: str) -> tuple[int, ...]:
    # A lazy mapping (``checkpoint.hf.SafetensorsDir``) answers shapes without reading data.
    shape_of = getattr(sd, "shape_of", None)
    return tuple(shape_of(name)) if shape_of is not None else tuple(sd[name].shape)


def hf_to_megatron(
    hf_state_dict: Mapping[str, Tensor],
    arch: ArchSpec,
    spec: str = "local",
    *,
    layers: Iterable[int] | None = None,
    embedding: bool = True,
    head: bool = True,
) -> dict[str, Tensor]:
    """Convert a full HF state dict to FULL megatron tensors with global layer names.

    Validates first: every expected HF tensor must be present with the expected shape (the
    error names the tensor, expected and found shapes); an unknown tensor is an error too.
    ``lm_head.weight`` of a tied model and rotary ``inv_freq`` buffers are ignored.

    Args:
        hf_state_dict: HF names -> tensors (``model.state_dict()``, a safetensors dict, or a
            lazy ``checkpoint.hf.SafetensorsDir`` - then only the selected tensors are read).
        arch: the architecture.
        spec: ``'local'`` or ``'te'``: which names the norms get (see module doc).
        layers / embedding / head: convert only these global layers / the embedding / the final
            norm and output layer (a pipeline stage's share); default everything.
    Returns:
        megatron name -> full tensor (see :func:`expected_megatron_shapes`); tensors are in the
        source dtype.
    """
    _check_spec(spec)
    expected = expected_hf_shapes(arch)
    names = [
        k
        for k in hf_state_dict
        if not k.endswith("rotary_emb.inv_freq")
        and not (arch.tie_word_embeddings and k == "lm_head.weight")
    ]
    missing = [k for k in expected if k not in hf_state_dict]
    if missing:
        raise CheckpointError(
            f"missing {len(missing)} tensor(s) for {arch.model_type} with {arch.num_layers} "
            f"layers: {', '.join(missing[:8])}{' ...' if len(missing) > 8 else ''}"
        )
    unexpected = [k for k in names if k not in expected]
    if unexpected:
        raise CheckpointError(
            f"unexpected tensor(s) for {arch.model_type} with {arch.num_layers} layers: "
            f"{', '.join(unexpected[:8])}{' ...' if len(unexpected) > 8 else ''}"
        )
    for k, shape in expected.items():
        found = _shape_of(hf_state_dict, k)
        if found != shape:
            raise _shape_error(k, shape, found)

    sd = hf_state_dict
    out: dict[str, Tensor] = {}
    if embedding:
        out[_EMB] = _pad_vocab(sd["model.embed_tokens.weight"], arch)
    in_norm = _LOCAL_INPUT_NORM if spec == "local" else _TE_INPUT_NORM
    mlp_norm = _LOCAL_MLP_NORM if spec == "local" else _TE_MLP_NORM
    for i in range(arch.num_layers) if layers is None else layers:
        h, m = f"model.layers.{i}.", f"decoder.layers.{i}."
        out[m + in_norm] = sd[h + "input_layernorm.weight"]
        wq, wk, wv = (sd[f"{h}self_attn.{x}_proj.weight"] for x in "qkv")
        out[m + _QKV_W] = _fuse_qkv(wq, wk, wv, arch)
        if arch.qkv_bias:
            bq, bk, bv = (sd[f"{h}self_attn.{x}_proj.bias"] for x in "qkv")
            out[m + _QKV_B] = _fuse_qkv(bq, bk, bv, arch)
        if arch.qk_layernorm:
            out[m + _QNORM] = sd[h + "self_attn.q_norm.weight"]
            out[m + _KNORM] = sd[h + "self_attn.k_norm.weight"]
        out[m + _PROJ] = sd[h + "self_attn.o_proj.weight"]
        out[m + mlp_norm] = sd[h + "post_attention_layernorm.weight"]
        out[m + _FC1] = torch.cat(
            [sd[h + "mlp.gate_proj.weight"], sd[h + "mlp.up_proj.weight"]], dim=0
        )
        out[m + _FC2] = sd[h + "mlp.down_proj.weight"]
    if head:
        out[_FINAL_NORM] = sd["model.norm.weight"]
        if not arch.tie_word_embeddings:
            out[_OUT] = _pad_vocab(sd["lm_head.weight"], arch)
    return out


# --------------------------------------------------------------------------------------------
# megatron -> HF (tensor by tensor)
# --------------------------------------------------------------------------------------------


def megatron_to_hf(name: str, full_tensor: Tensor, arch: ArchSpec) -> list[tuple[str, Tensor]]:
    """Convert ONE full (TP-gathered) megatron tensor with a global layer index to HF tensors.

    ``linear_qkv`` splits into q/k/v, ``linear_fc1`` into gate/up, padded vocabulary rows are
    dropped. Returns ``[]`` for tensors HF does not store: ``*._extra_state`` and the output
    layer of a tied model. Accepts both local and TE spec names. The returned tensors may be
    views of ``full_tensor`` (copy before mutating it).

    Raises:
        CheckpointError: unknown name, or a shape that does not match ``arch``.
    """
    if name.endswith("._extra_state"):
        return []
    if name == _OUT and arch.tie_word_embeddings:
        return []
    expected = _expected_full_shape(name, arch)
    if tuple(full_tensor.shape) != expected:
        raise _shape_error(name, expected, full_tensor.shape)
    if name == _EMB:
        return [("model.embed_tokens.weight", full_tensor[: arch.vocab_size])]
    if name == _OUT:
        return [("lm_head.weight", full_tensor[: arch.vocab_size])]
    if name == _FINAL_NORM:
        return [("model.norm.weight", full_tensor)]
    i, suffix = _split_layer_name(name)
    h = f"model.layers.{i}."
    if suffix in _SIMPLE_LAYER:
        return [(h + _SIMPLE_LAYER[suffix], full_tensor)]
    if suffix in (_QKV_W, _QKV_B):
        kind = "weight" if suffix == _QKV_W else "bias"
        q, k, v = _split_qkv(full_tensor, arch)
        return [
            (f"{h}self_attn.q_proj.{kind}", q),
            (f"{h}self_attn.k_proj.{kind}", k),
            (f"{h}self_attn.v_proj.{kind}", v),
        ]
    if suffix == _FC1:
        gate, up = torch.chunk(full_tensor, 2, dim=0)
        return [(h + "mlp.gate_proj.weight", gate), (h + "mlp.up_proj.weight", up)]
    raise CheckpointError(f"unknown megatron tensor {name!r}")  # pragma: no cover - shapes catch it


def _split_layer_name(name: str) -> tuple[int, str]:
    m = _LAYER_RE.match(name)
    if m is None:
        raise CheckpointError(f"unknown megatron tensor {name!r}")
    return int(m.group(1)), m.group(2)


def _expected_full_shape(name: str, arch: ArchSpec) -> tuple[int, ...]:
    m = _LAYER_RE.match(name)
    if m is not None:
        i, suffix = int(m.group(1)), m.group(2)
        if not 0 <= i < arch.num_layers:
            raise CheckpointError(
                f"tensor {name!r}: layer index {i} out of range for {arch.num_layers} layers"
            )
        # Layer 0 stands for every layer; both specs' norm names are accepted.
        for spec in SPECS:
            shapes = _layer0_shapes(arch, spec)
            if f"decoder.layers.0.{suffix}" in shapes:
                return shapes[f"decoder.layers.0.{suffix}"]
        raise CheckpointError(f"unknown megatron tensor {name!r} for {arch.model_type}")
    shapes = _layer0_shapes(arch, "local")
    if name in shapes:
        return shapes[name]
    raise CheckpointError(f"unknown megatron tensor {name!r} for {arch.model_type}")


def _layer0_shapes(arch: ArchSpec, spec: str) -> dict[str, tuple[int, ...]]:
    one_layer = ArchSpec.from_dict({**arch.to_dict(), "num_layers": 1})
    return expected_megatron_shapes(one_layer, spec)


# --------------------------------------------------------------------------------------------
# Tensor parallelism
# --------------------------------------------------------------------------------------------


def tp_partition_dim(name: str) -> int | None:
    """The dim along which megatron splits ``name`` over TP ranks (``None``: replicated).

    Column-parallel (``linear_qkv`` weight and bias, ``linear_fc1``) and vocab-parallel
    (embedding, output layer): 0. Row-parallel (``linear_proj``, ``linear_fc2``): 1.
    Norms (incl. TE ``layer_norm_weight``, q/k layernorm) and row-parallel biases: ``None``.
    """
    base = name.rsplit(".", 1)
    leaf = base[-1]
    if name in (_EMB, _OUT):
        return 0
    if ".linear_qkv." in name or ".linear_fc1." in name:
        return None if leaf.startswith("layer_norm") else 0
    if ".linear_proj." in name or ".linear_fc2." in name:
        return 1 if leaf == "weight" else None
    return None


def _is_glu_fc1(name: str) -> bool:
    return name.endswith(".linear_fc1.weight") or name.endswith(".linear_fc1.bias")


def tp_shard(name: str, full_tensor: Tensor, tp_rank: int, tp_size: int) -> Tensor:
    """TP rank ``tp_rank``'s shard of a full megatron tensor (see module doc for ``linear_fc1``).

    Replicated tensors are returned whole. The shard may be a view of ``full_tensor``.
    """
    if not 0 <= tp_rank < tp_size:
        raise ValueError(f"tp_rank {tp_rank} out of range for tp_size {tp_size}")
    dim = tp_partition_dim(name)
    if dim is None or tp_size == 1:
        return full_tensor
    if full_tensor.shape[dim] % (2 * tp_size if _is_glu_fc1(name) else tp_size):
        raise CheckpointError(
            f"tensor {name!r}: dim {dim} of shape {tuple(full_tensor.shape)} does not split "
            f"evenly over {tp_size} tensor-parallel ranks"
        )
    if _is_glu_fc1(name):
        gate, up = torch.chunk(full_tensor, 2, dim=0)
        return torch.cat(
            [torch.chunk(gate, tp_size, dim=0)[tp_rank], torch.chunk(up, tp_size, dim=0)[tp_rank]]
        )
    return torch.chunk(full_tensor, tp_size, dim=dim)[tp_rank].contiguous()


def tp_gather(name: str, shards: list[Tensor]) -> Tensor:
    """Inverse of :func:`tp_shard`: the full tensor from the shards of all TP ranks, in order."""
    if not shards:
        raise ValueError(f"tp_gather({name!r}) needs at least one shard")
    dim = tp_partition_dim(name)
    if dim is None or len(shards) == 1:
        return shards[0]
    if _is_glu_fc1(name):
        halves = [torch.chunk(s, 2, dim=0) for s in shards]
        return torch.cat([h[0] for h in halves] + [h[1] for h in halves], dim=0)
    return torch.cat(shards, dim=dim)


# --------------------------------------------------------------------------------------------
# Pipeline parallelism
# --------------------------------------------------------------------------------------------


def pp_layer_offset(config: Any, pp_rank: int | None = None, vp_stage: int | None = None) -> int:
    """Global index of the first layer of pipeline stage ``pp_rank`` (megatron's own function).

    ``config`` is the model's ``TransformerConfig`` (``model.config``); ``pp_rank`` defaults to
    this process's pipeline rank. Uneven first/last stages and custom layouts follow megatron.
    """
    from megatron.core.transformer.transformer_layer import get_transformer_layer_offset

    return int(get_transformer_layer_offset(config, vp_stage=vp_stage, pp_rank=pp_rank))


def stage_layer_range(model: Any) -> range:
    """Global layer indices held by a built ``GPTModel`` stage (from its layers' numbers)."""
    layers = model.decoder.layers
    if len(layers) == 0:
        return range(0)
    # megatron's TransformerLayer.layer_number is 1-based and already includes the PP offset.
    first = int(layers[0].layer_number) - 1
    return range(first, first + len(layers))


def layer_index(name: str) -> int | None:
    """The layer index in a ``decoder.layers.{i}.…`` name, ``None`` for non-layer tensors."""
    m = _LAYER_RE.match(name)
    return int(m.group(1)) if m else None


def to_global_name(local_name: str, offset: int) -> str:
    """``decoder.layers.{j}.x`` (stage-local) -> ``decoder.layers.{j + offset}.x``."""
    m = _LAYER_RE.match(local_name)
    if m is None:
        return local_name
    return f"decoder.layers.{int(m.group(1)) + offset}.{m.group(2)}"


def to_local_name(global_name: str, offset: int) -> str:
    """Inverse of :func:`to_global_name`."""
    return to_global_name(global_name, -offset)
