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

The name map is :data:`TENSORS`: one :class:`TensorRule` per megatron tensor, giving its HF
tensor(s), their shapes in symbols of the architecture, the transform between the two sides and
the TP partition dim. Every function here derives from it: :func:`expected_hf_shapes`,
:func:`expected_megatron_shapes`, :func:`hf_to_megatron`, :func:`megatron_to_hf`,
:func:`tp_partition_dim` / :func:`tp_shard` / :func:`tp_gather`. The norms have a ``local`` and
a ``te`` (Transformer Engine layer spec) megatron name; a rule may apply only to some families
(q/k/v bias: Qwen2; q/k norms: Qwen3; output layer: untied embeddings).

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

Partition dims (:attr:`TensorRule.tp_dim`): column-parallel (``linear_qkv``, ``linear_fc1``) dim 0;
row-parallel (``linear_proj``, ``linear_fc2``) dim 1; vocab-parallel (embedding, output layer)
dim 0; norms replicated (``None``).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from nemo_rence.arch import ArchSpec

__all__ = [
    "SPECS",
    "TENSORS",
    "CheckpointError",
    "TensorRule",
    "Transform",
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

_LAYER_RE = re.compile(r"^decoder\.layers\.(\d+)\.(.+)$")


class CheckpointError(ValueError):
    """A checkpoint does not match the architecture (missing, unexpected or mis-shaped tensor)."""


def _shape_error(name: str, expected: Iterable[int], found: Iterable[int]) -> CheckpointError:
    return CheckpointError(
        f"tensor {name!r}: expected shape {tuple(expected)}, found {tuple(found)}"
    )


# --------------------------------------------------------------------------------------------
# Transforms between the HF tensor(s) and the megatron tensor
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


Shape = tuple[int, ...]


@dataclass(frozen=True)
class Transform:
    """How one megatron tensor is made of its HF tensor(s), and back; all along dim 0."""

    name: str
    to_megatron: Callable[[Sequence[Tensor], ArchSpec], Tensor]
    to_hf: Callable[[Tensor, ArchSpec], Sequence[Tensor]]
    """May return views of the megatron tensor."""
    megatron_shape: Callable[[Sequence[Shape], ArchSpec], Shape]
    """The megatron tensor's shape from the HF tensors' shapes."""
    stacked_halves: bool = False
    """``[a; b]`` of two column-parallel halves: TP rank r holds ``[a_r; b_r]`` (module doc)."""


def _rows(shapes: Sequence[Shape], _: ArchSpec) -> Shape:
    return (sum(s[0] for s in shapes), *shapes[0][1:])


COPY = Transform("copy", lambda ts, _: ts[0], lambda t, _: (t,), lambda s, _: s[0])
PAD_VOCAB = Transform(
    "pad_vocab",
    lambda ts, arch: _pad_vocab(ts[0], arch),
    lambda t, arch: (t[: arch.vocab_size],),
    lambda s, arch: (arch.padded_vocab_size(), *s[0][1:]),
)
"""Embedding / output layer: zero rows appended up to ``arch.padded_vocab_size()``."""
FUSE_QKV = Transform(
    "fuse_qkv",
    lambda ts, arch: _fuse_qkv(ts[0], ts[1], ts[2], arch),
    _split_qkv,
    _rows,
)
"""q, k, v -> megatron's per-query-group interleave (module doc)."""
CONCAT_GATE_UP = Transform(
    "concat_gate_up",
    lambda ts, _: torch.cat(list(ts), dim=0),
    lambda t, _: torch.chunk(t, 2, dim=0),
    _rows,
    stacked_halves=True,
)
"""gate, up -> ``[gate; up]``, sharded over TP half by half (module doc)."""


# --------------------------------------------------------------------------------------------
# The table
# --------------------------------------------------------------------------------------------


def _dims(arch: ArchSpec) -> dict[str, int]:
    """The symbols of :attr:`TensorRule.hf_shapes`."""
    return {
        "H": arch.hidden_size,
        "V": arch.vocab_size,
        "F": arch.ffn_hidden_size,
        "D": arch.head_dim,
        "Q": arch.num_attention_heads * arch.head_dim,
        "KV": arch.num_query_groups * arch.head_dim,
    }


@dataclass(frozen=True)
class TensorRule:
    """One megatron tensor and the HF tensor(s) it is made of. ``{i}`` in a name is the layer.

    Shapes are tuples of symbols: ``H`` hidden, ``V`` HF vocabulary, ``F`` FFN hidden,
    ``D`` head dim, ``Q`` query rows (heads * D), ``KV`` key/value rows (groups * D).
    """

    megatron: str
    hf: tuple[str, ...]
    hf_shapes: tuple[tuple[str, ...], ...]
    """One symbolic shape per HF tensor; the megatron shape follows from :attr:`transform`."""
    transform: Transform = COPY
    tp_dim: int | None = None
    """Dim along which megatron splits the tensor over TP ranks; None: replicated."""
    when: Callable[[ArchSpec], bool] | None = None
    """The families that have the tensor; None: all."""
    spec: str | None = None
    """The layer spec that uses this megatron name ('local' or 'te'); None: both."""

    def applies(self, arch: ArchSpec, spec: str | None = None) -> bool:
        """Whether ``arch`` (built with layer spec ``spec``; None: any) has this tensor."""
        return (self.when is None or self.when(arch)) and spec in (None, self.spec or spec)

    def hf_shape_values(self, arch: ArchSpec) -> list[Shape]:
        dims = _dims(arch)
        return [tuple(dims[d] for d in shape) for shape in self.hf_shapes]

    def megatron_shape(self, arch: ArchSpec) -> Shape:
        return self.transform.megatron_shape(self.hf_shape_values(arch), arch)


def _untied(arch: ArchSpec) -> bool:
    return not arch.tie_word_embeddings


def _qkv_bias(arch: ArchSpec) -> bool:
    return arch.qkv_bias


def _qk_layernorm(arch: ArchSpec) -> bool:
    return arch.qk_layernorm


_M, _H = "decoder.layers.{i}.", "model.layers.{i}."
_OUTPUT = "output_layer.weight"
_QKV = tuple(f"{_H}self_attn.{x}_proj.weight" for x in "qkv")
_QKV_BIAS = tuple(f"{_H}self_attn.{x}_proj.bias" for x in "qkv")

# fmt: off
EMBEDDING_TENSORS = (
    TensorRule("embedding.word_embeddings.weight", ("model.embed_tokens.weight",), (("V", "H"),), PAD_VOCAB, tp_dim=0),
)
LAYER_TENSORS = (
    TensorRule(_M + "input_layernorm.weight", (_H + "input_layernorm.weight",), (("H",),), spec="local"),
    TensorRule(_M + "self_attention.linear_qkv.layer_norm_weight", (_H + "input_layernorm.weight",), (("H",),), spec="te"),
    TensorRule(_M + "self_attention.linear_qkv.weight", _QKV, (("Q", "H"), ("KV", "H"), ("KV", "H")), FUSE_QKV, tp_dim=0),
    TensorRule(_M + "self_attention.linear_qkv.bias", _QKV_BIAS, (("Q",), ("KV",), ("KV",)), FUSE_QKV, tp_dim=0, when=_qkv_bias),
    TensorRule(_M + "self_attention.q_layernorm.weight", (_H + "self_attn.q_norm.weight",), (("D",),), when=_qk_layernorm),
    TensorRule(_M + "self_attention.k_layernorm.weight", (_H + "self_attn.k_norm.weight",), (("D",),), when=_qk_layernorm),
    TensorRule(_M + "self_attention.linear_proj.weight", (_H + "self_attn.o_proj.weight",), (("H", "Q"),), tp_dim=1),
    TensorRule(_M + "pre_mlp_layernorm.weight", (_H + "post_attention_layernorm.weight",), (("H",),), spec="local"),
    TensorRule(_M + "mlp.linear_fc1.layer_norm_weight", (_H + "post_attention_layernorm.weight",), (("H",),), spec="te"),
    TensorRule(_M + "mlp.linear_fc1.weight", (_H + "mlp.gate_proj.weight", _H + "mlp.up_proj.weight"), (("F", "H"), ("F", "H")), CONCAT_GATE_UP, tp_dim=0),
    TensorRule(_M + "mlp.linear_fc2.weight", (_H + "mlp.down_proj.weight",), (("H", "F"),), tp_dim=1),
)
HEAD_TENSORS = (
    TensorRule("decoder.final_layernorm.weight", ("model.norm.weight",), (("H",),)),
    TensorRule(_OUTPUT, ("lm_head.weight",), (("V", "H"),), PAD_VOCAB, tp_dim=0, when=_untied),
)
# fmt: on
TENSORS = EMBEDDING_TENSORS + LAYER_TENSORS + HEAD_TENSORS
"""Every tensor of a supported decoder, in state-dict order (layer rules once per layer)."""

_BY_MEGATRON = {rule.megatron: rule for rule in TENSORS}


def _rule_of(name: str) -> tuple[TensorRule | None, int | None]:
    """The rule of a megatron name (either spec's) and its layer index (None: not a layer)."""
    m = _LAYER_RE.match(name)
    if m is None:
        return _BY_MEGATRON.get(name), None
    return _BY_MEGATRON.get(_M + m.group(2)), int(m.group(1))


def _expand(
    arch: ArchSpec,
    spec: str,
    layers: Iterable[int] | None = None,
    embedding: bool = True,
    head: bool = True,
) -> Iterable[tuple[TensorRule, str, list[str]]]:
    """``(rule, megatron name, HF names)`` of every tensor of ``arch`` (or of a stage's share)."""

    def named(
        rules: Iterable[TensorRule], i: int = 0
    ) -> Iterable[tuple[TensorRule, str, list[str]]]:
        for r in rules:
            if r.applies(arch, spec):
                yield r, r.megatron.format(i=i), [h.format(i=i) for h in r.hf]

    if embedding:
        yield from named(EMBEDDING_TENSORS)
    for i in range(arch.num_layers) if layers is None else layers:
        yield from named(LAYER_TENSORS, i)
    if head:
        yield from named(HEAD_TENSORS)


def _check_spec(spec: str) -> None:
    if spec not in SPECS:
        raise ValueError(f"spec must be one of {SPECS}; got {spec!r}")


# --------------------------------------------------------------------------------------------
# Expected shapes
# --------------------------------------------------------------------------------------------


def expected_hf_shapes(arch: ArchSpec) -> dict[str, tuple[int, ...]]:
    """Every HF tensor of ``arch`` and its shape (``lm_head.weight`` only when untied)."""
    return {
        hf: shape
        for rule, _, hf_names in _expand(arch, "local")
        for hf, shape in zip(hf_names, rule.hf_shape_values(arch), strict=True)
    }


def expected_megatron_shapes(arch: ArchSpec, spec: str = "local") -> dict[str, tuple[int, ...]]:
    """Every FULL megatron tensor of ``arch`` (global layer names) and its shape."""
    _check_spec(spec)
    return {name: rule.megatron_shape(arch) for rule, name, _ in _expand(arch, spec)}


# --------------------------------------------------------------------------------------------
# HF -> megatron
# --------------------------------------------------------------------------------------------


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
    return {
        name: rule.transform.to_megatron([hf_state_dict[h] for h in hf_names], arch)
        for rule, name, hf_names in _expand(arch, spec, layers, embedding, head)
    }


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
    if name == _OUTPUT and arch.tie_word_embeddings:
        return []  # the last pipeline stage's copy of the tied embedding
    rule, i = _rule_of(name)
    if i is not None and not 0 <= i < arch.num_layers:
        raise CheckpointError(
            f"tensor {name!r}: layer index {i} out of range for {arch.num_layers} layers"
        )
    if rule is None or not rule.applies(arch):
        raise CheckpointError(f"unknown megatron tensor {name!r} for {arch.model_type}")
    expected = rule.megatron_shape(arch)
    if tuple(full_tensor.shape) != expected:
        raise _shape_error(name, expected, full_tensor.shape)
    hf_names = [h.format(i=i) for h in rule.hf]
    return list(zip(hf_names, rule.transform.to_hf(full_tensor, arch), strict=True))


# --------------------------------------------------------------------------------------------
# Tensor parallelism
# --------------------------------------------------------------------------------------------


def tp_partition_dim(name: str) -> int | None:
    """The dim along which megatron splits ``name`` over TP ranks (``None``: replicated).

    Column-parallel (``linear_qkv`` weight and bias, ``linear_fc1``) and vocab-parallel
    (embedding, output layer): 0. Row-parallel (``linear_proj``, ``linear_fc2``): 1.
    Norms (incl. TE ``layer_norm_weight``, q/k layernorm), and names outside :data:`TENSORS`
    (``*._extra_state``): ``None``. Accepts stage-local and global layer names.
    """
    rule, _ = _rule_of(name)
    return None if rule is None else rule.tp_dim


def _stacked_halves(name: str) -> bool:
    rule, _ = _rule_of(name)
    return rule is not None and rule.transform.stacked_halves


def tp_shard(name: str, full_tensor: Tensor, tp_rank: int, tp_size: int) -> Tensor:
    """TP rank ``tp_rank``'s shard of a full megatron tensor (see module doc for ``linear_fc1``).

    Replicated tensors are returned whole. The shard may be a view of ``full_tensor``.
    """
    if not 0 <= tp_rank < tp_size:
        raise ValueError(f"tp_rank {tp_rank} out of range for tp_size {tp_size}")
    dim = tp_partition_dim(name)
    if dim is None or tp_size == 1:
        return full_tensor
    halves = _stacked_halves(name)
    if full_tensor.shape[dim] % (2 * tp_size if halves else tp_size):
        raise CheckpointError(
            f"tensor {name!r}: dim {dim} of shape {tuple(full_tensor.shape)} does not split "
            f"evenly over {tp_size} tensor-parallel ranks"
        )
    if halves:
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
    if _stacked_halves(name):
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
