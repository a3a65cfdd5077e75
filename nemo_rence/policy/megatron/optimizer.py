"""Optimizers for the Megatron policy: AdamW on CPU, Megatron's distributed optimizer on GPU.

Both see the gradients that megatron's ``DistributedDataParallel`` accumulated in each
parameter's ``main_grad`` (already reduced over data-parallel ranks by ``finalize_model_grads``)
and both clip by the GLOBAL gradient norm of the model::

    ||g|| = sqrt( sum over parameters p counted once of ||g_p||^2 )

"Counted once": a tensor-parallel-sharded parameter contributes its shard on every TP rank (the
shards partition it), a TP-replicated parameter (norms, row-parallel biases) only on TP rank 0,
and the tied output copy of the word embedding on the last pipeline stage (``param.shared``) not
at all. The per-rank partial sums are all-reduced over the model-parallel (TP x PP) group;
data-parallel replicas hold identical gradients and are not summed. This is what Megatron-LM's
``get_grad_norm_fp32`` computes, written without CUDA kernels so that it runs anywhere.

* CPU: :class:`CpuAdamW` - ``torch.optim.AdamW`` over the model's parameters (Megatron's
  optimizer wrappers assert CUDA tensors). Weight decay is applied to matrices only (not to
  norms or biases), as in Megatron-LM.
* GPU: :func:`build_megatron_optimizer` - ``get_megatron_optimizer`` with the distributed
  optimizer (fp32 main params and Adam state sharded over DP ranks, bf16 model params). Norms and
  biases get no weight decay there either (:func:`no_weight_decay`): megatron-core 0.16.1 marks
  them with ``wd_mult=0`` in their parameter group (``config_overrides``), but only its
  ``OptimizerParamScheduler`` turns that into the group's ``weight_decay`` (torch's Adam reads
  ``weight_decay`` only), and this path does not use the scheduler: the adapter sets
  ``weight_decay = settings.weight_decay * wd_mult`` per group itself, as the scheduler would.

Both expose ``step() -> grad_norm`` (pre-clip), ``zero_grad()``, checkpoint state in the form
``checkpoint.dist`` saves (plain per rank on CPU, sharded on GPU) and ``reload_model_params()``
through :class:`PolicyOptimizer`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import torch
import torch.distributed as dist
from torch import nn

__all__ = [
    "CpuAdamW",
    "OptimizerSettings",
    "PolicyOptimizer",
    "build_megatron_optimizer",
    "build_optimizer",
    "global_grad_norm",
    "grads_for_norm",
    "no_weight_decay",
    "weight_decay_overrides",
]


@dataclass(frozen=True)
class OptimizerSettings:
    """AdamW hyper-parameters (defaults: the ReNCE paper, Sec. 5)."""

    lr: float = 1e-6
    """Constant learning rate."""
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    weight_decay: float = 0.01
    """Decoupled weight decay, applied to weight matrices only."""
    clip_grad: float = 1.0
    """Clip the global gradient norm to this value; 0 disables clipping."""

    def __post_init__(self) -> None:
        if self.lr <= 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if not all(0.0 <= b < 1.0 for b in self.betas):
            raise ValueError(f"betas must be in [0, 1), got {self.betas}")
        if self.weight_decay < 0 or self.clip_grad < 0:
            raise ValueError("weight_decay and clip_grad must be >= 0")


class PolicyOptimizer(Protocol):
    """The optimizer interface the policy uses."""

    def step(self) -> float:
        """Clip and apply the accumulated gradients; return the pre-clip global grad norm."""
        ...

    def zero_grad(self) -> None: ...

    def set_lr(self, lr: float) -> None:
        """Use learning rate ``lr`` from the next step on (schedules: ``policy.schedule``)."""
        ...

    def checkpoint_state(self, model: nn.Module) -> Mapping[str, Any]:
        """The state to save (``checkpoint.dist.save_checkpoint``'s ``optimizer_state``)."""
        ...

    def checkpoint_template(self, model: nn.Module) -> Mapping[str, Any] | None:
        """What ``checkpoint.dist.load_checkpoint`` loads a sharded state into (None: plain)."""
        ...

    def load_checkpoint_state(self, state: Mapping[str, Any]) -> None:
        """Restore the state returned by ``checkpoint.dist.load_checkpoint``."""
        ...

    def reload_model_params(self) -> None:
        """Re-read the model parameters after they were overwritten (weights loaded)."""
        ...


def no_weight_decay(name: str, param: torch.Tensor) -> bool:
    """True for the parameters that take no weight decay: norms and biases (1-D tensors, or names
    ending in ``.bias``), the rule of Megatron-LM and of :class:`CpuAdamW`."""
    return param.dim() <= 1 or name.endswith(".bias")


def weight_decay_overrides() -> dict[Any, Any]:
    """megatron-core 0.16.1 ``config_overrides`` for ``get_megatron_optimizer``: the parameters
    :func:`no_weight_decay` selects form their own groups with ``wd_mult=0``
    (``megatron/core/optimizer/__init__.py``: ``_get_param_groups``; ``ParamKey`` /
    ``ParamWithNamePredicate`` in ``optimizer_config.py``)."""
    from megatron.core.optimizer import ParamKey, ParamWithNamePredicate

    key = ParamKey(
        with_name_predicate=ParamWithNamePredicate(
            name="no_weight_decay", fn=lambda param, name: no_weight_decay(name, param)
        )
    )
    return {key: {"wd_mult": 0.0}}


def _main_grad(p: nn.Parameter) -> torch.Tensor | None:
    g = getattr(p, "main_grad", None)
    return g if g is not None else p.grad


def grads_for_norm(params: Iterable[nn.Parameter]) -> list[torch.Tensor]:
    """The gradients that enter the global norm on this rank (each parameter counted once)."""
    from megatron.core.tensor_parallel.layers import param_is_not_tensor_parallel_duplicate
    from megatron.core.transformer.module import param_is_not_shared

    out = []
    for p in params:
        g = _main_grad(p)
        if g is None or not param_is_not_shared(p):
            continue
        if param_is_not_tensor_parallel_duplicate(p):
            out.append(g)
    return out


def global_grad_norm(
    params: Iterable[nn.Parameter], group: dist.ProcessGroup | None = None
) -> float:
    """L2 norm of the whole model's gradient across the model-parallel ``group`` (see module doc)."""
    grads = grads_for_norm(params)
    sq = torch.zeros((), dtype=torch.float32)
    if grads:
        sq = torch.stack([g.detach().float().pow(2).sum() for g in grads]).sum().cpu()
    if group is not None and dist.is_initialized() and dist.get_world_size(group) > 1:
        dist.all_reduce(sq, group=group)
    return math.sqrt(float(sq))


class CpuAdamW:
    """``torch.optim.AdamW`` over megatron ``main_grad`` buffers with global-norm clipping.

    Clipping scales ``main_grad`` in place (Megatron's ``clip_grad_by_total_norm_fp32`` does the
    same), and ``param.grad`` aliases it when the dtypes agree (fp32 on CPU): a step holds no
    gradient-sized temporary (135M parameters: 0.5 GiB less at the peak).

    Args:
        params: the model's parameters (this rank's shards).
        settings: hyper-parameters.
        model_parallel_group: group over which the grad norm is summed (TP x PP).
    """

    def __init__(
        self,
        params: Iterable[nn.Parameter],
        settings: OptimizerSettings,
        model_parallel_group: dist.ProcessGroup | None = None,
    ) -> None:
        self.params = [p for p in params if p.requires_grad]
        self.settings = settings
        self.group = model_parallel_group
        decay = [p for p in self.params if p.dim() > 1]
        no_decay = [p for p in self.params if p.dim() <= 1]
        self.optimizer = torch.optim.AdamW(
            [
                {"params": decay, "weight_decay": settings.weight_decay},
                {"params": no_decay, "weight_decay": 0.0},
            ],
            lr=settings.lr,
            betas=settings.betas,
            eps=settings.eps,
        )

    def step(self) -> float:
        norm = global_grad_norm(self.params, self.group)
        if not math.isfinite(norm):
            raise FloatingPointError(f"non-finite gradient norm {norm}; skipping is not supported")
        scale = 1.0
        if self.settings.clip_grad > 0 and norm > self.settings.clip_grad:
            scale = self.settings.clip_grad / (norm + 1e-6)
        for p in self.params:
            g = _main_grad(p)
            if g is not None and scale != 1.0:
                g.mul_(scale)  # in place, as Megatron clips: no second gradient-sized copy
            p.grad = None if g is None else g.to(p.dtype)  # an alias when the dtypes agree
        self.optimizer.step()
        for p in self.params:
            p.grad = None
        return norm

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None

    def set_lr(self, lr: float) -> None:
        for group in self.optimizer.param_groups:
            group["lr"] = lr

    def checkpoint_state(self, model: nn.Module) -> Mapping[str, Any]:
        # A plain per-rank torch state dict: reloads at the same parallel layout only.
        return self.optimizer.state_dict()

    def checkpoint_template(self, model: nn.Module) -> Mapping[str, Any] | None:
        return None

    def load_checkpoint_state(self, state: Mapping[str, Any]) -> None:
        self.optimizer.load_state_dict(dict(state))

    def reload_model_params(self) -> None:
        """Nothing to do: AdamW updates the model parameters themselves."""


class _MegatronOptimizerAdapter:
    """Gives a ``MegatronOptimizer`` the :class:`PolicyOptimizer` interface.

    ``weight_decay`` is applied per parameter group as ``weight_decay * wd_mult`` (what
    megatron's ``OptimizerParamScheduler.step`` does; see the module docstring).
    """

    def __init__(self, optimizer: Any, weight_decay: float = 0.0) -> None:
        self.optimizer = optimizer
        self.weight_decay = weight_decay
        self._apply_weight_decay()

    def _apply_weight_decay(self) -> None:
        for group in self.optimizer.param_groups:
            group["weight_decay"] = self.weight_decay * group.get("wd_mult", 1.0)

    def step(self) -> float:
        ok, grad_norm, _ = self.optimizer.step()
        if not ok:
            raise FloatingPointError("megatron optimizer step skipped (inf/nan gradients)")
        return float(grad_norm or 0.0)

    def zero_grad(self) -> None:
        self.optimizer.zero_grad()

    def set_lr(self, lr: float) -> None:
        # as megatron's OptimizerParamScheduler does: per-group multipliers kept
        for group in self.optimizer.param_groups:
            group["lr"] = lr * group.get("lr_mult", 1.0)

    def _model_sharded(self, model: nn.Module) -> dict[str, Any]:
        # Same keys as checkpoint.dist's weights ("module." prefix), so that the optimizer state
        # references the model tensors it belongs to.
        return dict(model.sharded_state_dict(prefix="module."))  # type: ignore[operator]

    def checkpoint_state(self, model: nn.Module) -> Mapping[str, Any]:
        # Sharded over DP/TP/PP: reshardable on load.
        return self.optimizer.sharded_state_dict(self._model_sharded(model), is_loading=False)

    def checkpoint_template(self, model: nn.Module) -> Mapping[str, Any] | None:
        return self.optimizer.sharded_state_dict(self._model_sharded(model), is_loading=True)

    def load_checkpoint_state(self, state: Mapping[str, Any]) -> None:
        self.optimizer.load_state_dict(dict(state))
        self._apply_weight_decay()  # a checkpoint from before this rule must not bring it back

    def reload_model_params(self) -> None:
        self.optimizer.reload_model_params()


def build_megatron_optimizer(
    ddp_model: nn.Module, settings: OptimizerSettings, params_dtype: torch.dtype
) -> PolicyOptimizer:
    """Megatron's (distributed) Adam on GPU; ``ddp_model`` must be wrapped with megatron DDP
    built with ``use_distributed_optimizer=True``."""
    from megatron.core.optimizer import OptimizerConfig, get_megatron_optimizer

    config = OptimizerConfig(
        optimizer="adam",
        lr=settings.lr,
        min_lr=settings.lr,
        weight_decay=settings.weight_decay,
        adam_beta1=settings.betas[0],
        adam_beta2=settings.betas[1],
        adam_eps=settings.eps,
        clip_grad=settings.clip_grad,
        bf16=params_dtype == torch.bfloat16,
        fp16=params_dtype == torch.float16,
        params_dtype=params_dtype,
        use_distributed_optimizer=True,
    )
    optimizer = get_megatron_optimizer(
        config, [ddp_model], config_overrides=weight_decay_overrides()
    )
    return _MegatronOptimizerAdapter(optimizer, settings.weight_decay)


def build_optimizer(
    ddp_model: nn.Module, settings: OptimizerSettings, params_dtype: torch.dtype
) -> PolicyOptimizer:
    """AdamW on CPU, Megatron's distributed optimizer on GPU."""
    if torch.cuda.is_available():
        return build_megatron_optimizer(ddp_model, settings, params_dtype)
    from megatron.core import parallel_state as ps

    return CpuAdamW(ddp_model.parameters(), settings, ps.get_model_parallel_group())
