"""The CPU compatibility layer makes megatron's CUDA-isms run on CPU, and only without CUDA.

Each check runs in a fresh interpreter: ``enable()`` is process-wide and irreversible.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
import torch

pytestmark = pytest.mark.skipif(torch.cuda.is_available(), reason="CPU-only behaviour")


def _run(code: str) -> str:
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def test_cuda_device_arguments_are_rewritten_to_cpu():
    out = _run(
        """
        import torch
        from nemo_rence.infra import cpu_compat
        assert cpu_compat.enable() and cpu_compat.enable()  # idempotent
        devs = [
            torch.zeros(2, device="cuda").device,
            torch.empty(3, device=torch.device("cuda", 0)).device,
            torch.arange(4, device=torch.cuda.current_device()).device,
            torch.ones(1).to("cuda").device,
            torch.ones(1).to(device="cuda:0").device,
            torch.ones(1).cuda().device,
            torch.tensor([1.0], device="cuda").device,
        ]
        print(sorted({d.type for d in devs}))
        """
    )
    assert out.strip() == "['cpu']"


def test_cpu_tensors_and_math_are_unchanged_under_the_layer():
    out = _run(
        """
        import torch
        from nemo_rence.infra import cpu_compat
        x = torch.randn(5, 7, generator=torch.Generator().manual_seed(0))
        ref = (x @ x.T).logsumexp(-1)
        cpu_compat.enable()
        y = (x @ x.T).logsumexp(-1)
        print(torch.equal(ref, y), torch.ones(2, dtype=torch.float64).dtype)
        """
    )
    assert out.split() == ["True", "torch.float64"]


def test_cuda_arguments_are_rewritten_inside_custom_autograd_backward():
    out = _run(
        """
        import torch
        from nemo_rence.infra import cpu_compat
        cpu_compat.enable()

        class Recompute(torch.autograd.Function):  # like megatron's CheckpointFunction
            @staticmethod
            def forward(ctx, x):
                return x * 2

            @staticmethod
            def backward(ctx, grad):
                return grad * torch.full((1,), 2.0, device="cuda")

        x = torch.ones(3, requires_grad=True)
        Recompute.apply(x).sum().backward()
        print(x.grad.tolist())
        """
    )
    assert out.strip() == "[2.0, 2.0, 2.0]"


def test_suspended_block_runs_without_the_mode_and_restores_it():
    out = _run(
        """
        import torch
        from torch.overrides import _get_current_function_mode_stack as stack
        from nemo_rence.infra import cpu_compat
        cpu_compat.enable()
        before = len(stack())
        with cpu_compat.suspended():
            inside = len(stack())
            try:
                torch.zeros(1, device="cuda")
                raised = False
            except (RuntimeError, AssertionError):
                raised = True
        print(before, inside, raised, len(stack()), torch.zeros(1, device="cuda").device)
        """
    )
    assert out.split() == ["1", "0", "True", "1", "cpu"]


def test_megatron_rng_tracker_forks_and_restores_a_real_state():
    out = _run(
        """
        import torch
        from nemo_rence.infra import cpu_compat
        cpu_compat.enable()
        from megatron.core.tensor_parallel import random as r
        r.initialize_rng_tracker(force_reset=True)
        tracker = r.get_cuda_rng_tracker()
        torch.cuda.manual_seed(1)
        tracker.add("a", 1234)
        before = torch.cuda.get_rng_state().clone()
        with tracker.fork("a"):
            inside = torch.cuda.get_rng_state().clone()
        after = torch.cuda.get_rng_state()
        g = torch.Generator().manual_seed(1234)
        print(torch.equal(before, after), torch.equal(inside, g.get_state()),
              torch.equal(before, inside))
        """
    )
    assert out.split() == ["True", "True", "False"]


def test_layer_is_a_no_op_when_cuda_is_present():
    out = _run(
        """
        import torch
        torch.cuda.is_available = lambda: True
        from nemo_rence.infra import cpu_compat
        print(cpu_compat.enable(), cpu_compat.is_enabled(), torch.cuda.current_device.__module__)
        """
    )
    assert out.split() == ["False", "False", "torch.cuda"]
