"""Four processes: TP=2 x PP=2 with sequence parallelism and full recomputation (the layout of
the Llama-3.1-70B recipe, scaled down) reproduces the one-process reference of MegatronPolicy.

Usage: torchrun --nproc_per_node 4 policy_tp2pp2_sp.py REF_DIR   (REF_DIR from policy_reference.py)
The pipeline stages exchange sequence-sharded activations [S / 2, B, H] of variable length.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))

from policy_parallel import run_layout

from nemo_rence.policy.megatron.parallel import init_parallel, teardown


def main(ref_dir: Path) -> None:
    ref = torch.load(ref_dir / "reference.pt", weights_only=True)
    init_parallel(2, 2, seed=0)
    run_layout(2, 2, ref, "tp2pp2sp", sequence_parallel=True, recompute="full")
    teardown()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
