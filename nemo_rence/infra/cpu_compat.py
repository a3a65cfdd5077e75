"""Run Megatron-Core on a machine without CUDA (CI, laptops, the embedded default).

Megatron-Core builds and trains on CPU under gloo, but a few places hard-code CUDA:
``torch.cuda.current_device()``, ``device="cuda"`` / ``device=torch.cuda.current_device()``
factory arguments in the pipeline schedules and p2p code, ``tensor.cuda()``, and the CUDA RNG
tracker (``torch.cuda.get_rng_state`` / ``manual_seed`` and megatron's
``_get_cuda_rng_state`` / ``_set_cuda_rng_state``). :func:`enable` fixes all of these at once:

1. a process-wide :class:`torch.overrides.TorchFunctionMode` that rewrites a CUDA device
   (``"cuda"``, ``"cuda:N"``, ``torch.device("cuda")`` or an int device id) to CPU in every
   torch call that takes a ``device`` (factories, ``Tensor.to``), and makes ``Tensor.cuda()``
   return the tensor itself;
2. CPU stand-ins for ``torch.cuda.current_device``, ``synchronize``, ``manual_seed(_all)``,
   ``get_rng_state`` / ``set_rng_state`` backed by a private CPU ``torch.Generator`` that plays
   the role of the device generator (so megatron's RNG tracker forks and restores a real state);
3. the same stand-ins for megatron's ``tensor_parallel.random._get/_set_cuda_rng_state``;
4. the mode re-entered around the ``backward`` of custom autograd Functions: the autograd engine
   runs them with an EMPTY torch-function mode stack, and megatron's activation recomputation
   (``CheckpointFunction.backward``) re-runs the forward there.

It is active only when CUDA is absent: :func:`enable` is a no-op (returns ``False``) on a GPU
machine, so this module changes nothing there. Enable it once per process before building a
model or initialising megatron's model-parallel state. It is idempotent.

Example::

    from nemo_rence.infra import cpu_compat
    cpu_compat.enable()          # True on a CPU-only machine
    torch.zeros(2, device="cuda").device   # device(type='cpu')
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from typing import Any

import torch
from torch.overrides import TorchFunctionMode

__all__ = ["enable", "is_enabled", "suspended"]

_lock = threading.Lock()
_enabled = False
_mode: TorchFunctionMode | None = None
# Plays the role of the CUDA generator for megatron's RNG tracker.
_device_generator = torch.Generator(device="cpu")


def _is_cuda_device(device: Any) -> bool:
    if isinstance(device, torch.device):
        return device.type == "cuda"
    if isinstance(device, str):
        return device.startswith("cuda")
    # An int device id means "cuda:<id>" to torch factory functions.
    return isinstance(device, int) and not isinstance(device, bool)


class _CudaToCpuMode(TorchFunctionMode):
    """Rewrites CUDA device arguments to CPU in every torch call made under it."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = dict(kwargs or {})
        if func is torch.Tensor.cuda:
            return args[0]
        if _is_cuda_device(kwargs.get("device")):
            kwargs["device"] = torch.device("cpu")
        if func is torch.Tensor.to and len(args) > 1 and _is_cuda_device(args[1]):
            args = (args[0], torch.device("cpu"), *args[2:])
        return func(*args, **kwargs)


def _get_rng_state(device: Any = "cuda", clone: bool = False, graph_safe: bool = False):
    return _device_generator.get_state()


def _set_rng_state(new_state: torch.Tensor, device: Any = -1, graph_safe: bool = False) -> None:
    _device_generator.set_state(new_state.clone())


def _manual_seed(seed: int) -> None:
    _device_generator.manual_seed(int(seed))


def _patch_torch_cuda() -> None:
    cuda = torch.cuda
    cuda.current_device = lambda: 0
    cuda.synchronize = lambda device=None: None
    cuda.manual_seed = _manual_seed
    cuda.manual_seed_all = _manual_seed
    cuda.get_rng_state = lambda device="cuda": _device_generator.get_state()
    cuda.set_rng_state = lambda new_state, device="cuda": _set_rng_state(new_state)
    cuda.random.get_rng_state = cuda.get_rng_state
    cuda.random.set_rng_state = cuda.set_rng_state


def _patch_megatron_rng() -> None:
    try:
        from megatron.core.tensor_parallel import random as mcore_random
    except ImportError:  # megatron not installed: nothing to patch
        return
    mcore_random._get_cuda_rng_state = _get_rng_state
    mcore_random._set_cuda_rng_state = _set_rng_state


def _patch_custom_backward() -> None:
    from torch.autograd.function import BackwardCFunction

    original = BackwardCFunction.apply

    def apply(self: Any, *args: Any) -> Any:
        with _CudaToCpuMode():
            return original(self, *args)

    BackwardCFunction.apply = apply  # type: ignore[method-assign]


@contextlib.contextmanager
def suspended() -> Iterator[None]:
    """Run a block without the device-rewriting mode (no per-op Python overhead).

    For code that never asks for CUDA, e.g. the ``hf`` rollout engine generating in the same
    process as the Megatron policy: every torch call under the mode goes through Python.
    """
    if not _enabled or _mode is None:
        yield
        return
    from torch.overrides import _get_current_function_mode_stack, _pop_mode, _push_mode

    stack = _get_current_function_mode_stack()
    if not stack or stack[-1] is not _mode:  # someone pushed another mode on top: leave it
        yield
        return
    _pop_mode()
    try:
        yield
    finally:
        _push_mode(_mode)


def is_enabled() -> bool:
    """Whether the compatibility layer is active in this process."""
    return _enabled


def enable() -> bool:
    """Activate the CPU compatibility layer if CUDA is absent; return whether it is active."""
    global _enabled, _mode
    if torch.cuda.is_available():
        return False
    with _lock:
        if _enabled:
            return True
        _patch_torch_cuda()
        _patch_megatron_rng()
        _patch_custom_backward()
        _mode = _CudaToCpuMode()
        _mode.__enter__()
        _enabled = True
    return True
