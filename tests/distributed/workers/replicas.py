"""Worker: build the real components on the boxing model, run one training iteration, and print
what each rank generated and (rank 0) every draw's groups and the filter's batch.

Usage (under torchrun or plain python): ``replicas.py MODEL_DIR OUT_DIR [override ...]``.
Prints one ``RESULT {json}`` line per rank.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from tests.golden.smoke import OVERRIDES


def main() -> None:
    model_dir, out_dir, *extra = sys.argv[1:]
    from nemo_rence.build import build_components
    from nemo_rence.config import compose
    from nemo_rence.infra.distributed import rank
    from nemo_rence.loop import Trainer

    cfg = compose(
        [
            "model=hf",
            f"model.hf_dir={model_dir}",
            *OVERRIDES,
            "rollout.seed_mode=per_prompt",
            "run.iterations=1",
            f"run.out_dir={out_dir}",
            *extra,
        ]
    )
    parts = build_components(cfg, Path(out_dir))
    trainer = Trainer(cfg, parts, logger=None, is_main=rank() == 0)
    generated: list[str] = []
    draws: list[list[dict]] = []
    share = trainer._generate_share

    def counted_share(draw):  # what this rank's engine generated
        generated.extend(str(p.id) for p in draw.prompts)
        return share(draw)

    trainer._generate_share = counted_share  # type: ignore[method-assign]
    run = trainer.replicas.run

    def recorded_run(draw, generate):  # rank 0: each draw's groups, in prompt order
        groups = run(draw, generate)
        draws.append(
            [
                {
                    "id": str(g.prompt_id),
                    "seed": None if draw.seeds is None else draw.seeds[i],
                    "rewards": g.rewards,
                    "tokens": g.rollouts.token_ids,
                }
                for i, g in enumerate(groups)
            ]
        )
        return groups

    trainer.replicas.run = recorded_run  # type: ignore[method-assign]
    next_batch = trainer.filter.next_batch
    batch_ids: list[str] = []

    def recorded_batch(*args, **kwargs):
        batch, stats = next_batch(*args, **kwargs)
        batch_ids.extend(str(g.prompt_id) for g in batch)
        return batch, stats

    trainer.filter.next_batch = recorded_batch  # type: ignore[method-assign]
    metrics = trainer.train_iteration()
    parts.close()
    result = {
        "rank": rank(),
        "has_engine": parts.engine is not None,
        "generated": generated,
        "draws": draws,
        "batch": batch_ids,
        "mastered": sorted(str(m) for m in trainer.filter.mastered),
        "cache": [str(g.prompt_id) for g in trainer.filter.cache],
        "metrics": {k: v for k, v in metrics.items() if k.startswith(("rollout/", "filter/"))},
        "refit_version": metrics.get("refit/version"),
    }
    print("RESULT " + json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
