"""Every preset in ``conf/algorithm/`` (every loss, every ablation) runs one iteration end to end
through the real entry point (``nemo-rence train algorithm=<preset>``) on the golden run's tiny
boxing model (``tests/golden/smoke.py``), so that a preset that cannot run is caught in CI (issue
17: ``algorithm=grpo`` died at its first update for want of a reference policy).

The runs share one process (``cli.main``; each run tears its process groups down) and one boxing
model, and are cut to the least that still updates the policy: 2 prompts x 4 rollouts, 12 new
tokens, one optimizer step, one held-out prompt.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from nemo_rence.cli import main
from nemo_rence.config import CONF_DIR
from tests.golden.smoke import write_boxing_model

pytestmark = pytest.mark.slow

PRESETS = sorted(p.stem for p in (CONF_DIR / "algorithm").glob("*.yaml"))

FAST = [
    "filter.batch_size=2",
    "filter.max_draws=4",
    "filter.unsolved=keep_if_contrast",
    "rollout.prompts_per_draw=2",
    "rollout.group_size=4",
    "rollout.max_new_tokens=12",
    "rollout.temperature=1.0",
    "optim.mini_batch_size=2",
    "optim.n_update=1",
    "optim.lr=1e-3",
    "data.max_prompt_tokens=512",
    "run.iterations=1",
    "run.eval_size=1",
    "run.save_every=0",
]


@pytest.fixture(scope="module")
def boxing_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_boxing_model(tmp_path_factory.mktemp("presets") / "boxing-model")


@pytest.mark.parametrize("preset", PRESETS)
def test_every_algorithm_preset_trains_one_iteration(preset, boxing_model, tmp_path):
    out = tmp_path / "run"
    args = ["train", f"algorithm={preset}", "model=hf", f"model.hf_dir={boxing_model}", *FAST]
    assert main([*args, f"run.out_dir={out}", "--no-progress"]) == 0
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    (train,) = [
        r for r in rows if r["iteration"] == 1 and not any(k.startswith("eval/is_") for k in r)
    ]
    cfg = json.loads((out / "config.json").read_text())
    assert f"loss/{'dpo' if preset == 'semi_online_dpo' else cfg['loss']['name']}" in train
    assert math.isfinite(train["loss/total"]) and math.isfinite(train["policy/grad_norm"])
    assert train["train/skipped_steps"] == 0.0
    if cfg["loss"]["name"] == "grpo" and cfg["loss"]["kl_beta"] > 0:
        assert train["kl/ref_k3"] >= 0.0  # the reference policy's logprobs reached the loss
    if preset == "semi_online_dpo":
        assert train["reference/synced_at"] == 1.0  # s = n_update = 1: synced after the step


@pytest.mark.parametrize("mode", ["seq_mask", "token_tis"])
def test_a_run_with_a_rollout_correction_logs_the_mismatch(mode, boxing_model, tmp_path):
    # the fp32 hf engine equals the policy to ~1e-7 nats: tiny mismatch, nothing masked/truncated
    out = tmp_path / "run"
    args = ["train", "model=hf", f"model.hf_dir={boxing_model}", *FAST]
    extra = ["rollout.reuse_logprobs=false", f"rollout_correction.mode={mode}"]
    assert main([*args, *extra, f"run.out_dir={out}", "--no-progress"]) == 0
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    (train,) = [r for r in rows if "mismatch/kl" in r]
    assert 0.0 <= train["mismatch/kl"] < 1e-6
    assert abs(train["mismatch/token_mult_prob_error"] - 1.0) < 1e-5
    kind = "masked" if mode.endswith("mask") else "truncated"
    assert train[f"mismatch/{kind}_seqs"] == 0.0 and train[f"mismatch/{kind}_tokens"] == 0.0
    assert math.isfinite(train["loss/total"]) and train["train/skipped_steps"] == 0.0
