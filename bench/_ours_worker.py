"""Our side of ``bench/trl_compare.py``: ``Trainer.train_iteration`` of the real loop.

Run by ``trl_compare.py`` in its own process (so the peak RSS is its own)::

    python bench/_ours_worker.py SPEC.json RESULT.json

``SPEC.json`` holds the config overrides, the planned prompts and the warm-up / measured
iteration counts; ``RESULT.json`` receives the times, the stage split and the peak RSS.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from _rss import GIB, descendants_hwm_bytes, maxrss_bytes


class _Timed:
    """Wraps a callable, adding its wall seconds to ``seconds[key]``."""

    def __init__(self, fn: Any, seconds: dict[str, float], key: str) -> None:
        self.fn, self.seconds, self.key = fn, seconds, key

    def __call__(self, *a: Any, **kw: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return self.fn(*a, **kw)
        finally:
            self.seconds[self.key] += time.perf_counter() - t0


def run_ours(spec: dict[str, Any]) -> dict[str, Any]:
    """Warm-up + measured ``Trainer.train_iteration`` calls; times, stage split, peak RSS."""
    import dataclasses

    import megatron.core
    import torch
    import transformers

    import nemo_rence
    from nemo_rence.build import build_components
    from nemo_rence.config import compose
    from nemo_rence.loop import Trainer
    from nemo_rence.policy.megatron.parallel import teardown

    cfg = compose(spec["overrides"])
    torch.set_num_threads(cfg.run.threads)
    rss_start = maxrss_bytes()
    work_dir = Path(spec["work_dir"])
    built = parts = build_components(cfg, work_dir)
    drawn: list[str] = []
    source = parts.source

    def recording_source() -> list[Any]:
        records = source()
        drawn.extend(r.id for r in records)
        return records

    sub: dict[str, float] = defaultdict(float)
    engine = parts.engine
    assert engine is not None
    engine.generate = _Timed(engine.generate, sub, "generate")  # type: ignore[method-assign]
    parts.reward.batch = _Timed(parts.reward.batch, sub, "grade")
    parts = dataclasses.replace(parts, source=recording_source)
    trainer = Trainer(cfg, parts, logger=None)
    rss_built = maxrss_bytes()
    iterations = []
    try:
        for i in range(spec["warmup"] + spec["steps"]):
            sub.clear()
            t0, c0 = time.perf_counter(), time.process_time()
            metrics = trainer.train_iteration()
            seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
            stages = {k.split("/", 1)[1]: v for k, v in metrics.items() if k.startswith("time/")}
            stages["rollout.generate"] = sub["generate"]
            stages["rollout.grade"] = sub["grade"]
            rollouts = int(metrics["filter/rollouts"])
            iterations.append(
                {
                    "iteration_s": seconds,
                    "cpu_s": cpu,
                    "stages_s": stages,
                    "rollouts": rollouts,
                    "response_tokens": round(metrics["rollout/response_tokens_mean"] * rollouts),
                    "reward_mean": metrics["reward/mean"],
                    "maxrss_gib": maxrss_bytes() / GIB,
                }
            )
            print(f"ours: iteration {i} {seconds:.1f} s", file=sys.stderr, flush=True)
        rss_peak = maxrss_bytes()
        children = descendants_hwm_bytes()
    finally:
        built.close()
        teardown()
    measured = iterations[spec["warmup"] :]
    stage_keys = sorted({k for it in measured for k in it["stages_s"]})
    return {
        "versions": {
            "python": sys.version.split()[0],
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "megatron_core": megatron.core.__version__,
            "nemo_rence": nemo_rence.__version__,
        },
        "trainer": "nemo_rence.loop.Trainer.train_iteration (ReNCE)",
        "config": {
            "overrides": spec["overrides"],
            "loss": cfg.loss.name,
            "filter_enabled": cfg.filter.enabled,
            "n_update": cfg.optim.n_update,
            "mini_batch_groups": cfg.optim.mini_batch_size,
            "micro_batch_rollouts": cfg.rollout.group_size * cfg.policy.micro_batch_groups,
            "rollout_engine": cfg.rollout.engine,
            "grader_workers": 1,
            "torch_threads": torch.get_num_threads(),
        },
        "prompts_match_plan": drawn == [p["id"] for p in spec["prompts"]],
        "warmup_iteration_s": [it["iteration_s"] for it in iterations[: spec["warmup"]]],
        "measured_iteration_s": [it["iteration_s"] for it in measured],
        "iteration_s": statistics.median(it["iteration_s"] for it in measured),
        "iteration_cpu_s": statistics.median(it["cpu_s"] for it in measured),
        "stage_split_s": {
            k: statistics.median(it["stages_s"].get(k, 0.0) for it in measured) for k in stage_keys
        },
        "per_iteration": iterations,
        "rollouts_per_step": [it["rollouts"] for it in measured],
        "response_tokens_per_step": [it["response_tokens"] for it in measured],
        "peak_rss_gib": (rss_peak + children) / GIB,
        "rss_breakdown_gib": {
            "after_imports": rss_start / GIB,
            "after_build": rss_built / GIB,
            "after_train": rss_peak / GIB,
            "descendants_peak": children / GIB,
        },
    }


def main(spec_path: str, result_path: str) -> None:
    spec = json.loads(Path(spec_path).read_text())
    sys.path.insert(0, spec["repo_root"])
    Path(result_path).write_text(json.dumps(run_ours(spec), indent=2))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
