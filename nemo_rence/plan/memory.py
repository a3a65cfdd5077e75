"""Per-GPU memory of a ReNCE run for each tensor / pipeline / data-parallel layout (pure arithmetic).

Notation: ``P`` parameters on this rank, ``t`` TP size, ``p`` PP size, ``d`` DP size, ``L`` layers,
``h`` hidden size, ``a`` query heads, ``g`` key/value heads, ``c`` head dim, ``f`` MLP size,
``V`` padded vocabulary, ``s`` micro-batch sequence length (prompt + response), ``b`` rows of a
micro-batch (``micro_batch_groups * K``: listwise losses keep a group's K rollouts together),
``e`` bytes per activation element.

Parameters per rank (megatron's partitioning, :func:`rank_params`)::

    layer   = [h (a c + 2 g c) + a c h + 3 h f] / t      (qkv, out proj, SwiGLU fc1 (2f) + fc2)
            + [a c + 2 g c] / t  if qkv bias  +  2 h  (norms)  +  2 c  if q/k norm (replicated)
    stage 0 += V h / t (embedding);  last stage += V h / t (output layer, also when tied and p > 1)
            + h (final norm);  each stage holds L / p layers; the planner takes the largest stage.

Model and optimizer state, bytes per parameter (:class:`Precision`, :func:`state_bytes`)::

    weights  w  (2 bf16, 4 fp32)
    grads    4  (megatron DDP accumulates ``main_grad`` in fp32: ``grad_reduce_in_fp32``)
    master   4  (fp32 copy, only when weights are not fp32)
    Adam     8  (two fp32 moments)
    bf16 total: 2 + 4 + 4 + 8 = 18 B/param; the distributed optimizer shards master + moments
    over DP: 6 + 12 / d (the table of Megatron-LM's distributed-optimizer guide,
    docs/source/api-guide/dist_optimizer.md; ZeRO stage 1, Rajbhandari et al. 2020).

Activations of one transformer layer for one micro-batch (:func:`activation_bytes_per_layer`).
Korthikanti et al. 2022, "Reducing Activation Recomputation in Large Transformer Models",
eq. (1)-(2) and Table 2, for a GPT layer (4h GeLU MLP, MHA, dropout, fp16)::

    no recompute, TP without SP:  s b h (10 + 24 / t + 5 a s / (h t))
    TP + sequence parallel:       s b h (34 + 5 a s / h) / t
    selective recompute (+SP):    34 s b h / t
    full recompute:               2 s b h  (only the layer input; / t with SP)

Generalised here term by term to the decoders we train (SwiGLU, GQA, optional q/k norm, no
dropout) with ``e`` bytes per element; per token::

    replicated over TP (/ t only with SP): 4 h e   (inputs of the 2 norms, of qkv and of fc1)
    split over TP (/ t):  e (2 a c + 2 g c  [q, k, v, attention output]
                             + a c + g c    [q/k norm inputs, Qwen3]
                             + 3 f          [fc1 output 2f, SwiGLU output f])
    attention core:       flash: 4 a (fp32 log-sum-exp) / t;  unfused: e a s / t (softmax
                          output); with dropout: + (1 + e) a s / t (mask + output)

which reproduces Korthikanti's 34 s b h + 5 a s^2 b exactly for a GPT layer (test
``test_activation_formula_reproduces_korthikanti``). Selective recompute drops the attention-core
term; full recompute keeps only the layer input ``e s b h`` per layer, plus one layer's
activations while it is recomputed in the backward pass.

Pipeline: with 1F1B, stage 0 holds the activations of ``min(p, m)`` micro-batches (``m``
micro-batches per optimizer step per DP rank) for its ``L / p`` layers (Korthikanti Sec. 4.2.3;
Narayanan et al. 2021), i.e. about L layers' worth for one micro-batch when ``m >= p``. The output
head adds a chunked logprob workspace (no full ``[tokens, V]`` logits: ``policy.megatron.logprobs``),
about three ``[C, V / t]`` fp32 blocks of ``DEFAULT_CHUNK_BYTES``; with sequence parallelism also
the all-gathered final hidden states ``e s b h`` (the logprobs need every position on every rank).

Colocated rollout engine (TensorRT-LLM sleeps, i.e. releases its memory, during training; the
policy keeps weights, grads and optimizer state on the GPU during rollouts). ``t_engine`` is the
engine's TP size as :func:`nemo_rence.rollout.layout.engine_layout` builds it (``nemo-rence plan``
passes it: 1 for the in-process hf engine, whose host GPU holds all its weights, else
``rollout.tensor_parallel``; ``t * p`` when not given)::

    engine weights = P_total * w_engine / t_engine
    KV cache       = 2 * L * ceil(g / t_engine) * c * kv_bytes * tokens,
                     tokens = rollout_groups * K * (prompt + response)

Peak per GPU = max(static + activations + head, static + optimizer-step workspace,
static + engine weights + KV cache) + reserve (on CPU the step workspace adds to the
activations instead: see ``Precision.workspace_reuses_activations``), where ``static`` = weights + grads + optimizer
state and ``reserve`` covers the CUDA context, NCCL buffers and allocator fragmentation.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Literal

from nemo_rence.arch import ArchSpec
from nemo_rence.policy.megatron.logprobs import DEFAULT_CHUNK_BYTES

__all__ = [
    "CPU_FP32",
    "GIB",
    "GPU_BF16",
    "RECOMPUTE_MODES",
    "LayoutPlan",
    "MemoryEstimate",
    "Plan",
    "Precision",
    "Recompute",
    "Workload",
    "activation_bytes_per_layer",
    "backward_workspace_bytes",
    "engine_problems",
    "estimate",
    "kv_cache_bytes",
    "layout_problems",
    "plan",
    "rank_params",
    "state_bytes",
    "total_params",
]

GIB = 2**30
Recompute = Literal["none", "selective", "full"]
RECOMPUTE_MODES: tuple[Recompute, ...] = ("none", "selective", "full")


@dataclass(frozen=True)
class Precision:
    """Bytes per element of every kind of state (defaults: bf16 mixed precision on GPU)."""

    param_bytes: int = 2
    """Model weights (bf16)."""
    grad_bytes: int = 4
    """Gradient accumulation buffer (fp32 ``main_grad``)."""
    master_bytes: int = 4
    """fp32 master weights (0 when the weights are fp32 already)."""
    moment_bytes: int = 8
    """Adam's two fp32 moments."""
    activation_bytes: int = 2
    """Activations (bf16)."""
    flash_attention: bool = True
    """Fused attention (TE / flash): no ``[a, s, s]`` softmax output is stored."""
    dropout: bool = False
    """Dropout masks are stored (off for the models we train; on to reproduce Korthikanti)."""
    unfused_layers: bool = False
    """megatron's local (pure PyTorch) layer spec: unfused RMSNorm and SwiGLU keep more
    tensors and GQA keys / values are expanded to every head (see
    :func:`activation_bytes_per_layer`); False for the Transformer Engine spec."""
    step_workspace_bytes: float = 0.0
    """Transient bytes per parameter during the optimizer step (0 for megatron's fused Adam;
    torch's foreach AdamW on CPU allocates a clipped-gradient copy and a sqrt buffer: 8)."""
    workspace_reuses_activations: bool = True
    """The freed activations' memory serves the optimizer step (PyTorch's CUDA caching
    allocator). On CPU it does not (measured: glibc keeps the freed heap pages of the backward
    pass and the step's buffers come on top), so there the step workspace adds to the peak."""
    engine_param_bytes: int = 2
    """Rollout-engine weights."""
    kv_bytes: int = 2
    """Rollout-engine KV cache (bf16; 1 for an fp8 cache)."""


GPU_BF16 = Precision()
"""GPU: bf16 weights, fp32 grads / master / moments, flash attention, megatron's fused Adam."""
CPU_FP32 = Precision(
    param_bytes=4,
    grad_bytes=4,
    master_bytes=0,
    moment_bytes=8,
    activation_bytes=4,
    flash_attention=False,
    unfused_layers=True,
    step_workspace_bytes=8.0,
    workspace_reuses_activations=False,
    engine_param_bytes=4,
    kv_bytes=4,
)
"""CPU (the policy's CPU path): fp32 everywhere, local (unfused) attention, torch AdamW."""


@dataclass(frozen=True)
class Workload:
    """The shapes one training step and one rollout round hold."""

    seq_len: int
    """Tokens of the longest rollout of a micro-batch: max prompt + max response (worst case)."""
    micro_batch_rows: int
    """Rollouts per micro-batch: ``policy.micro_batch_groups * rollout.group_size``."""
    micro_batches_per_step: int = 1
    """Micro-batches per optimizer step on one DP rank at DP=1 (``mini_batch_size /
    micro_batch_groups``); divided by DP per layout. Bounds the 1F1B in-flight count."""
    group_size: int = 8
    """K rollouts per prompt."""
    rollout_groups: int = 1
    """Groups whose KV cache one engine replica must hold at once (at least one group:
    K x (prompt + response) tokens)."""
    mini_batch_groups: int = 32
    """Prompts per optimizer step (``optim.mini_batch_size``): each DP rank needs >= 1 group."""

    def __post_init__(self) -> None:
        for name in ("seq_len", "micro_batch_rows", "micro_batches_per_step", "group_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"Workload.{name} must be >= 1, got {getattr(self, name)}")


# ----------------------------------------------------------------------------------------------
# Parameters
# ----------------------------------------------------------------------------------------------


def _dims(arch: ArchSpec) -> tuple[int, int, int, int, int]:
    return (
        arch.hidden_size,
        arch.num_attention_heads,
        arch.num_query_groups,
        arch.head_dim,
        arch.ffn_hidden_size,
    )


def _layer_params(arch: ArchSpec, tp: int) -> float:
    h, a, g, c, f = _dims(arch)
    split = h * (a * c + 2 * g * c) + a * c * h + 3 * h * f
    if arch.qkv_bias:
        split += a * c + 2 * g * c
    replicated = 2 * h + (2 * c if arch.qk_layernorm else 0)
    return split / tp + replicated


def rank_params(arch: ArchSpec, tp: int = 1, pp: int = 1) -> int:
    """Parameters held by the most loaded rank of a ``tp x pp`` model-parallel group.

    Embedding and output layer use the padded vocabulary (``arch.padded_vocab_size``); a tied
    output layer is a second copy on the last stage when ``pp > 1`` (megatron keeps one per end
    stage and all-reduces their gradients).
    """
    if arch.num_layers % pp:
        raise ValueError(f"num_layers={arch.num_layers} is not divisible by pp={pp}")
    layers = arch.num_layers // pp * _layer_params(arch, tp)
    emb = arch.padded_vocab_size() * arch.hidden_size / tp
    if pp == 1:
        ends = emb + (0 if arch.tie_word_embeddings else emb) + arch.hidden_size
    else:
        ends = emb + arch.hidden_size  # the last stage: output layer + final norm
    return math.ceil(layers + ends)


def total_params(arch: ArchSpec) -> int:
    """Parameters of the whole model as Hugging Face counts them (unpadded vocab, tied once)."""
    emb = arch.vocab_size * arch.hidden_size
    out = 0 if arch.tie_word_embeddings else emb
    return int(arch.num_layers * _layer_params(arch, 1) + emb + out + arch.hidden_size)


def state_bytes(
    params: float, prec: Precision, *, dp: int = 1, distributed_optimizer: bool = False
) -> tuple[float, float, float]:
    """(weights, grads, optimizer state) bytes for ``params`` parameters on one rank.

    The distributed optimizer shards the fp32 master weights and Adam moments over the DP
    ranks (the grad buffer stays whole: it is reduce-scattered in place).
    """
    opt = params * (prec.master_bytes + prec.moment_bytes)
    if distributed_optimizer:
        opt /= dp
    return params * prec.param_bytes, params * prec.grad_bytes, opt


# ----------------------------------------------------------------------------------------------
# Activations and KV cache
# ----------------------------------------------------------------------------------------------


def activation_bytes_per_layer(
    arch: ArchSpec,
    seq_len: int,
    rows: int,
    prec: Precision,
    *,
    tp: int = 1,
    recompute: Recompute = "none",
    sequence_parallel: bool = False,
    gated_mlp: bool = True,
) -> float:
    """Bytes one layer keeps for the backward pass of one ``rows x seq_len`` micro-batch.

    See the module docstring for the per-token terms and their derivation from Korthikanti et
    al. 2022; ``gated_mlp=False`` (a 2-matrix GeLU MLP: ``2 f`` stored elements) exists to
    reproduce the paper's GPT numbers.
    """
    if recompute not in RECOMPUTE_MODES:
        raise ValueError(f"recompute must be one of {RECOMPUTE_MODES}, got {recompute!r}")
    h, a, g, c, f = _dims(arch)
    e = prec.activation_bytes
    tokens = seq_len * rows
    sp = tp if sequence_parallel else 1
    if recompute == "full":
        return tokens * e * h / sp
    if prec.unfused_layers:
        # megatron's local spec: each RMSNorm keeps input, normalised and output (3h for two);
        # k and v are expanded to all a heads before the core; SwiGLU keeps fc1 out (2f), the
        # SiLU output (f), the product (f) and its chunk copy (f).
        replicated = 6 * h * e
        split = e * (4 * a * c + (2 * (a * c + g * c) if arch.qk_layernorm else 0))
        split += e * (5 * f if gated_mlp else 2 * f)
    else:
        replicated = 4 * h * e + (2 * h if prec.dropout else 0)  # 2 hidden dropout masks, 1 B
        split = e * (2 * a * c + 2 * g * c + (a * c + g * c if arch.qk_layernorm else 0))
        split += e * (3 * f if gated_mlp else 2 * f)
    if recompute == "selective":
        core = 0.0
    elif prec.flash_attention:
        core = 4.0 * a
    else:
        core = a * seq_len * (e + ((1 + e) if prec.dropout else 0))
    return tokens * (replicated / sp + (split + core) / tp)


def backward_workspace_bytes(
    arch: ArchSpec, seq_len: int, rows: int, prec: Precision, *, tp: int = 1
) -> float:
    """Transient gradients of the one layer being back-propagated (beside the stored ones):
    ``e * tokens * (2 f + 2 h) / t``, plus, without flash attention, the score buffer and the
    gradients of the softmax input and output (``3 e a s`` per token)."""
    h, a, _, _, f = _dims(arch)
    e = prec.activation_bytes
    per_token = e * (2 * f + 2 * h) + (0 if prec.flash_attention else 3 * e * a * seq_len)
    return seq_len * rows * per_token / tp


def kv_cache_bytes(arch: ArchSpec, tokens: int, *, kv_bytes: int = 2, tp: int = 1) -> float:
    """KV cache of ``tokens`` tokens on one GPU of a ``tp``-way engine:
    ``2 * L * ceil(g / tp) * c * kv_bytes * tokens`` (key and value of every layer; KV heads are
    split over TP ranks and replicated when ``tp > g``)."""
    heads = math.ceil(arch.num_query_groups / tp)
    return 2.0 * arch.num_layers * heads * arch.head_dim * kv_bytes * tokens


# ----------------------------------------------------------------------------------------------
# One layout
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MemoryEstimate:
    """Per-GPU bytes of one layout in one mode (distributed optimizer on/off, recompute)."""

    tp: int
    pp: int
    dp: int
    distributed_optimizer: bool
    recompute: Recompute
    params: int
    """Parameters on the most loaded rank."""
    weights: float
    grads: float
    optimizer: float
    activations: float
    """Stored activations of the in-flight micro-batches, the recompute working layer and the
    backward workspace of one layer."""
    head: float
    """Chunked logprob workspace of the output head."""
    step_workspace: float
    """Transient buffers of the optimizer step."""
    engine_weights: float
    kv_cache: float
    reserve: float
    workspace_reuses_activations: bool = True
    """Whether the step workspace reuses the activations' memory (see :class:`Precision`)."""

    @property
    def static(self) -> float:
        """Weights + grads + optimizer state (resident all the time)."""
        return self.weights + self.grads + self.optimizer

    @property
    def train_peak(self) -> float:
        """Training phase: the engine sleeps; activations are freed before the optimizer step."""
        acts = self.activations + self.head
        if self.workspace_reuses_activations:
            return self.static + max(acts, self.step_workspace) + self.reserve
        return self.static + acts + self.step_workspace + self.reserve

    @property
    def rollout_peak(self) -> float:
        """Rollout phase: the policy's state stays resident beside the engine."""
        return self.static + self.engine_weights + self.kv_cache + self.reserve

    @property
    def peak(self) -> float:
        return max(self.train_peak, self.rollout_peak)

    def rollout_groups_that_fit(self, gpu_bytes: float, rollout_groups: int) -> int:
        """How many groups' KV cache fit beside everything else (``rollout_groups`` were asked)."""
        per_group = self.kv_cache / max(rollout_groups, 1)
        free = gpu_bytes - (self.static + self.engine_weights + self.reserve)
        return max(0, int(free // per_group)) if per_group > 0 else 0


def estimate(
    arch: ArchSpec,
    work: Workload,
    *,
    tp: int = 1,
    pp: int = 1,
    dp: int = 1,
    prec: Precision = GPU_BF16,
    distributed_optimizer: bool = True,
    recompute: Recompute = "none",
    sequence_parallel: bool = False,
    engine_tp: int | None = None,
    reserve_bytes: float = 0.0,
) -> MemoryEstimate:
    """The per-GPU memory of one layout (see the module docstring for every term)."""
    params = rank_params(arch, tp, pp)
    weights, grads, opt = state_bytes(
        params, prec, dp=dp, distributed_optimizer=distributed_optimizer
    )
    micro_per_rank = max(1, math.ceil(work.micro_batches_per_step / dp))
    in_flight = min(pp, micro_per_rank)
    layers = arch.num_layers // pp
    per_layer = activation_bytes_per_layer(
        arch,
        work.seq_len,
        work.micro_batch_rows,
        prec,
        tp=tp,
        recompute=recompute,
        sequence_parallel=sequence_parallel,
    )
    acts = layers * in_flight * per_layer
    if recompute == "full":  # one layer is rebuilt in full during its backward
        acts += activation_bytes_per_layer(
            arch,
            work.seq_len,
            work.micro_batch_rows,
            prec,
            tp=tp,
            sequence_parallel=sequence_parallel,
        )
    acts += backward_workspace_bytes(arch, work.seq_len, work.micro_batch_rows, prec, tp=tp)
    v_loc = arch.padded_vocab_size() / tp
    tokens_mb = work.seq_len * work.micro_batch_rows
    head = min(3 * DEFAULT_CHUNK_BYTES, 3 * 4.0 * tokens_mb * v_loc)
    if sequence_parallel and tp > 1:  # the all-gathered final hidden states of the micro-batch
        head += prec.activation_bytes * tokens_mb * arch.hidden_size
    t_engine = engine_tp or tp * pp
    engine_weights = total_params(arch) * prec.engine_param_bytes / t_engine
    tokens = work.rollout_groups * work.group_size * work.seq_len
    kv = kv_cache_bytes(arch, tokens, kv_bytes=prec.kv_bytes, tp=t_engine)
    return MemoryEstimate(
        tp=tp,
        pp=pp,
        dp=dp,
        distributed_optimizer=distributed_optimizer,
        recompute=recompute,
        params=params,
        weights=weights,
        grads=grads,
        optimizer=opt,
        activations=acts,
        head=head,
        step_workspace=params * prec.step_workspace_bytes,
        engine_weights=engine_weights,
        kv_cache=kv,
        reserve=reserve_bytes,
        workspace_reuses_activations=prec.workspace_reuses_activations,
    )


def layout_problems(
    arch: ArchSpec, work: Workload, *, tp: int, pp: int, gpus: int, gpus_per_node: int
) -> list[str]:
    """Why a ``tp x pp`` layout cannot run at all on ``gpus`` GPUs (empty: it can)."""
    problems = []
    if gpus % (tp * pp):
        problems.append(f"tp*pp={tp * pp} does not divide {gpus} GPUs")
    for what, n in (
        ("attention heads", arch.num_attention_heads),
        ("kv heads", arch.num_query_groups),
        ("ffn size", arch.ffn_hidden_size),
        ("vocab padding multiple", arch.make_vocab_size_divisible_by),
    ):
        if n % tp:
            problems.append(f"tp={tp} does not divide {what} ({n})")
    if tp > gpus_per_node:
        problems.append(f"tp={tp} spans nodes ({gpus_per_node} GPUs per node)")
    if arch.num_layers % pp:
        problems.append(f"pp={pp} does not divide {arch.num_layers} layers")
    dp = gpus // (tp * pp) if gpus % (tp * pp) == 0 else 0
    groups_per_micro = max(1, work.micro_batch_rows // work.group_size)
    if dp and dp * groups_per_micro > work.mini_batch_groups:
        problems.append(
            f"dp={dp} x {groups_per_micro} group(s) per micro-batch exceeds the mini-batch of "
            f"{work.mini_batch_groups} prompts: some DP ranks would get no group"
        )
    return problems


def engine_problems(arch: ArchSpec, *, engine_tp: int, gpus: int, gpus_per_node: int) -> list[str]:
    """Why engines of ``engine_tp`` GPUs cannot be built on ``gpus`` GPUs (empty: they can)."""
    problems = []
    if gpus % engine_tp:
        problems.append(f"engine tp={engine_tp} does not divide {gpus} GPUs")
    if engine_tp > gpus_per_node:
        problems.append(f"engine tp={engine_tp} spans nodes ({gpus_per_node} GPUs per node)")
    for what, n in (
        ("attention heads", arch.num_attention_heads),
        ("kv heads", arch.num_query_groups),
    ):
        if n % engine_tp and engine_tp % n:
            problems.append(f"engine tp={engine_tp} does not divide {what} ({n})")
    return problems


@dataclass(frozen=True)
class LayoutPlan:
    """One ``tp x pp x dp`` layout: its structural problems, every mode, the cheapest that fits."""

    tp: int
    pp: int
    dp: int
    problems: tuple[str, ...]
    modes: tuple[MemoryEstimate, ...]
    """Every (distributed optimizer, recompute) mode, in preference order."""
    chosen: MemoryEstimate | None
    """The first mode of ``modes`` whose peak fits the GPU; None when none fits."""
    gpu_bytes: float

    @property
    def feasible(self) -> bool:
        return not self.problems and self.chosen is not None

    def mode(self, distributed_optimizer: bool, recompute: Recompute) -> MemoryEstimate | None:
        for m in self.modes:
            if m.distributed_optimizer == distributed_optimizer and m.recompute == recompute:
                return m
        return None

    def verdict(self) -> str:
        if self.problems:
            return "invalid: " + "; ".join(self.problems)
        if self.chosen is None:
            best = min(self.modes, key=lambda m: m.peak)
            return f"OOM: needs {best.peak / GIB:.1f} GiB at best > {self.gpu_bytes / GIB:.1f} GiB"
        c = self.chosen
        return (
            f"fits: {c.peak / GIB:.1f} GiB with recompute={c.recompute}"
            f"{', distributed optimizer' if c.distributed_optimizer else ''}"
        )


@dataclass(frozen=True)
class Plan:
    """Every layout of ``gpus`` GPUs, best first, and the recommended one."""

    arch: ArchSpec
    work: Workload
    gpus: int
    gpu_bytes: float
    layouts: tuple[LayoutPlan, ...] = field(default_factory=tuple)
    engine_tp: int | None = None
    """The rollout engines' TP size (None: ``tp * pp`` of each layout)."""

    @property
    def recommended(self) -> LayoutPlan | None:
        """The feasible layout with the most data parallelism (fewest GPUs per model replica),
        then the shallowest pipeline (no bubble), then the least recompute."""
        feasible = [lp for lp in self.layouts if lp.feasible]
        return feasible[0] if feasible else None

    def find(self, tp: int, pp: int) -> LayoutPlan | None:
        for lp in self.layouts:
            if (lp.tp, lp.pp) == (tp, pp):
                return lp
        return None


def _divisors(n: int) -> list[int]:
    return [k for k in range(1, n + 1) if n % k == 0]


def _mode_order(
    distributed_optimizer: Sequence[bool], recompute: Iterable[Recompute]
) -> list[tuple[bool, Recompute]]:
    return [(r_do, rc) for rc in recompute for r_do in distributed_optimizer]


def plan(
    arch: ArchSpec,
    work: Workload,
    *,
    gpus: int,
    gpu_mem_gib: float,
    gpus_per_node: int = 8,
    prec: Precision = GPU_BF16,
    reserve_gib: float = 6.0,
    sequence_parallel: bool = False,
    distributed_optimizer: Sequence[bool] = (True, False),
    recompute: Sequence[Recompute] = RECOMPUTE_MODES,
    engine_tp: int | None = None,
) -> Plan:
    """Estimate every ``tp x pp`` layout of ``gpus`` GPUs and order them best first.

    Modes are tried in the order ``recompute`` lists them (cheapest compute first), each with the
    distributed optimizer options in the order given; a layout's ``chosen`` mode is the first that
    fits ``gpu_mem_gib - reserve``. ``reserve_gib`` (default 6) covers the CUDA context (~0.5
    GiB), NCCL communicator buffers (~1-2 GiB) and allocator fragmentation.
    """
    if gpus < 1:
        raise ValueError(f"gpus must be >= 1, got {gpus}")
    gpu_bytes = gpu_mem_gib * GIB
    reserve = reserve_gib * GIB
    out: list[LayoutPlan] = []
    engine = (
        engine_problems(arch, engine_tp=engine_tp, gpus=gpus, gpus_per_node=gpus_per_node)
        if engine_tp is not None
        else []
    )
    for tp in _divisors(gpus):
        for pp in _divisors(gpus // tp):
            dp = gpus // (tp * pp)
            problems = engine + layout_problems(
                arch, work, tp=tp, pp=pp, gpus=gpus, gpus_per_node=gpus_per_node
            )
            modes: list[MemoryEstimate] = []
            if arch.num_layers % pp == 0:
                for r_do, rc in _mode_order(distributed_optimizer, recompute):
                    modes.append(
                        estimate(
                            arch,
                            work,
                            tp=tp,
                            pp=pp,
                            dp=dp,
                            prec=prec,
                            distributed_optimizer=r_do,
                            recompute=rc,
                            sequence_parallel=sequence_parallel,
                            engine_tp=engine_tp,
                            reserve_bytes=reserve,
                        )
                    )
            chosen = next((m for m in modes if m.peak <= gpu_bytes), None)
            out.append(LayoutPlan(tp, pp, dp, tuple(problems), tuple(modes), chosen, gpu_bytes))

    def key(lp: LayoutPlan) -> tuple[int, int, int, int, int]:
        rc = RECOMPUTE_MODES.index(lp.chosen.recompute) if lp.chosen else len(RECOMPUTE_MODES)
        return (0 if lp.feasible else 1, lp.tp * lp.pp, lp.pp, rc, lp.tp)

    return Plan(arch, work, gpus, gpu_bytes, tuple(sorted(out, key=key)), engine_tp)
