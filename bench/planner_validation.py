"""Planner validation: estimated vs measured peak memory of a MegatronPolicy train step on CPU.

For each case a FRESH subprocess (one rank, TP = PP = DP = 1, gloo, fp32, local layer spec, torch
AdamW) initialises megatron, resets the kernel's peak-RSS counter (``/proc/self/clear_refs`` 5),
builds :class:`MegatronPolicy` (random init), runs two ``train_step`` calls (steady state: AdamW's moments exist from the first) on a batch of ``rows``
rollouts of ``seq`` tokens with the ReNCE loss, and reports ``VmHWM - RSS before the build``:
everything the policy allocated at its peak. The planner's estimate for the same shapes is
``nemo_rence.plan.memory.estimate(..., prec=CPU_FP32, distributed_optimizer=False)`` without a
reserve: weights + grads + AdamW moments + max(activations + logprob head, AdamW step workspace).

Cases: SmolLM2-135M (its real architecture) and the repo's tiny Llama at two widths; the
activation-dominated cases use longer sequences so that both terms of the estimate are tested.

Usage: python bench/planner_validation.py [--cases smollm2,tiny-256,tiny-512-long]
Prints one JSON object: per case the estimate, the measurement (MiB) and the relative error.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("OMP_NUM_THREADS", "1")

REPO = Path(__file__).resolve().parent.parent
MIB = 2**20

# name -> (model, layers, hidden, rows, seq)
CASES: dict[str, tuple[str, int, int, int, int]] = {
    "smollm2": ("smollm2", 0, 0, 4, 256),
    "tiny-256": ("tiny", 4, 256, 8, 256),
    "tiny-512-long": ("tiny", 4, 512, 8, 1024),
}


def _arch(model: str, layers: int, hidden: int):
    from nemo_rence.arch import ArchSpec
    from nemo_rence.plan.models import arch_for, tiny_hf_config

    if model == "smollm2":
        return arch_for("SmolLM2-135M-Instruct")
    return ArchSpec.from_hf_config(tiny_hf_config(layers, hidden))


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def _warm_up(batch: object, loss_fn: object) -> None:
    """Build and step a 1-layer policy once, so that lazy imports, megatron's global buffers and
    the allocator's arenas exist before the baseline; then free it and trim the heap."""
    import ctypes
    import gc

    import torch

    from nemo_rence.arch import ArchSpec
    from nemo_rence.plan.models import tiny_hf_config
    from nemo_rence.policy.interface import PolicyBatch
    from nemo_rence.policy.megatron.policy import MegatronPolicy, MegatronPolicyConfig

    arch = ArchSpec.from_hf_config(tiny_hf_config(1, 32))
    rows = 4
    small = PolicyBatch(
        torch.randint(0, arch.vocab_size, (rows, 8)),
        torch.full((rows,), 2),
        torch.full((rows,), 6),
        torch.arange(2).repeat_interleave(2),
        extras={"rewards": torch.tensor([1.0, 0.0] * 2), "old_logprobs": -torch.rand(rows, 6)},
    )
    policy = MegatronPolicy(arch, MegatronPolicyConfig(micro_batch_size=rows, spec="local"))
    policy.train_step(small, loss_fn)  # type: ignore[arg-type]
    del policy
    gc.collect()
    ctypes.CDLL("libc.so.6").malloc_trim(0)


def worker(model: str, layers: int, hidden: int, rows: int, seq: int) -> dict[str, float]:
    """Build the policy and run one train step; return the measured peak (bytes)."""
    import torch

    from nemo_rence.policy.interface import PolicyBatch, algorithm_loss
    from nemo_rence.policy.megatron.optimizer import OptimizerSettings
    from nemo_rence.policy.megatron.parallel import init_parallel, teardown
    from nemo_rence.policy.megatron.policy import MegatronPolicy, MegatronPolicyConfig

    torch.set_num_threads(1)
    arch = _arch(model, layers, hidden)
    init_parallel(1, 1, seed=0)
    g = torch.Generator().manual_seed(0)
    prompt = seq // 4
    ids = torch.randint(0, arch.vocab_size, (rows, seq), generator=g)
    k = rows // 2  # two groups
    batch = PolicyBatch(
        ids,
        torch.full((rows,), prompt),
        torch.full((rows,), seq - prompt),
        torch.arange(2).repeat_interleave(k),
        extras={
            "rewards": torch.tensor([1.0, 0.0] * (rows // 2)),
            "old_logprobs": -torch.rand(rows, seq - prompt, generator=g),
        },
    )
    loss_fn = algorithm_loss("rence", {})
    _warm_up(batch, loss_fn)
    Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
    before = _status_kib("VmRSS")
    policy = MegatronPolicy(
        arch,
        MegatronPolicyConfig(
            micro_batch_size=rows, spec="local", optimizer=OptimizerSettings(lr=1e-5)
        ),
    )
    # Two steps: AdamW creates its moments lazily in the first one; from the second step on they
    # are resident during forward and backward (the steady state the planner estimates).
    for _ in range(2):
        metrics = policy.train_step(batch, loss_fn)
    peak = _status_kib("VmHWM")
    teardown()
    return {
        "measured": (peak - before) * 1024.0,
        "loss": float(metrics["policy/loss"]),
    }


def estimate_case(model: str, layers: int, hidden: int, rows: int, seq: int) -> dict[str, float]:
    from nemo_rence.plan.memory import CPU_FP32, Workload, estimate

    arch = _arch(model, layers, hidden)
    est = estimate(
        arch,
        Workload(seq_len=seq, micro_batch_rows=rows, group_size=rows // 2),
        prec=CPU_FP32,
        distributed_optimizer=False,
    )
    return {
        "params": float(est.params),
        "static": est.static,
        "activations": est.activations,
        "head": est.head,
        "step_workspace": est.step_workspace,
        "estimate": est.train_peak,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", default=",".join(CASES))
    ap.add_argument("--worker", nargs=5, metavar=("MODEL", "LAYERS", "HIDDEN", "ROWS", "SEQ"))
    args = ap.parse_args()
    if args.worker:
        m, layers, hidden, rows, seq = args.worker
        print("RESULT " + json.dumps(worker(m, int(layers), int(hidden), int(rows), int(seq))))
        return
    out: dict[str, dict[str, float]] = {}
    for name in args.cases.split(","):
        spec = CASES[name]
        proc = subprocess.run(
            [sys.executable, __file__, "--worker", *map(str, spec)],
            capture_output=True,
            text=True,
            timeout=900,
            cwd=REPO,
            env=dict(os.environ, PYTHONPATH=str(REPO)),
            check=False,
        )
        lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
        if proc.returncode or not lines:
            raise SystemExit(f"case {name} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
        measured = json.loads(lines[-1][len("RESULT ") :])
        est = estimate_case(*spec)
        out[name] = {
            "rows": spec[3],
            "seq": spec[4],
            "params": est["params"],
            **{k: round(v / MIB, 1) for k, v in est.items() if k != "params"},
            "measured": round(measured["measured"] / MIB, 1),
            "rel_error": round(est["estimate"] / measured["measured"] - 1.0, 3),
        }
    print(
        json.dumps(
            {
                "bench": "planner_validation",
                "unit": "MiB",
                "threads": os.environ.get("OMP_NUM_THREADS"),
                "cases": out,
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
