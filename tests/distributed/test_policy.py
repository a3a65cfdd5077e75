"""MegatronPolicy at TP=2 (with and without sequence parallelism), PP=2 and DP=2 (two processes,
gloo) reproduces TP=PP=DP=1.

Two torchrun launches serve every check: ``policy_reference.py`` (one process) computes the
reference step and runs the single-replica checks; ``policy_parallel.py`` (two processes) replays
it at each layout. Each check prints ``CHECK <name> OK``; a failing check fails its rank, and the
launch, with the full output.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import torchrun

pytestmark = pytest.mark.distributed

WORKERS = Path(__file__).parent / "workers"


@pytest.fixture(scope="module")
def reference_dir(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    out = tmp_path_factory.mktemp("policy_reference")
    log = torchrun(WORKERS / "policy_reference.py", str(out), nproc=1)
    return out, log


@pytest.fixture(scope="module")
def parallel_log(reference_dir: tuple[Path, str]) -> str:
    return torchrun(WORKERS / "policy_parallel.py", str(reference_dir[0]), nproc=2)


def _passed(log: str, name: str) -> bool:
    return f"CHECK {name} OK" in log


@pytest.mark.parametrize(
    "name",
    [
        "logprobs_match_megatron_full_logits_at_temperature",
        "logprobs_match_megatron_full_logits_untied_output_layer",
        "padding_and_trailing_tokens_do_not_change_logprobs",
        "micro_batches_of_whole_groups_accumulate_the_same_gradient",
        "activation_recomputation_gives_the_same_gradient",
        "shared_prefix_layout_equals_rollout_layout",
        "micro_batch_size_that_splits_a_group_raises",
        "export_weights_is_lazy",
        "save_load_restores_weights_and_optimizer_state",
    ],
)
def test_single_replica(reference_dir, name):
    assert _passed(reference_dir[1], name), reference_dir[1][-4000:]


@pytest.mark.parametrize(
    "layout", ["tp2", "tp2sp", "tp2sp_recompute", "pp2", "dp2", "tp2sp_shared", "pp2_shared"]
)
@pytest.mark.parametrize(
    "check",
    [
        "export_weights_{}_equals_tp1",
        "logprobs_{}_equal_tp1",
        "loss_and_global_grad_norm_{}_equal_tp1",
        "gradients_{}_equal_tp1",
        "optimizer_step_{}_equals_tp1",
    ],
)
def test_parallel_layout_equals_single_process(parallel_log, layout, check):
    assert _passed(parallel_log, check.format(layout)), parallel_log[-4000:]


@pytest.mark.slow
def test_tp2_pp2_with_sequence_parallel_and_recompute_equals_single_process(reference_dir):
    """The 70B recipe's combination (TP x PP, sequence parallel, full recompute) on 4 processes."""
    log = torchrun(WORKERS / "policy_tp2pp2_sp.py", str(reference_dir[0]), nproc=4)
    for check in (
        "export_weights_{}_equals_tp1",
        "logprobs_{}_equal_tp1",
        "loss_and_global_grad_norm_{}_equal_tp1",
        "gradients_{}_equal_tp1",
        "optimizer_step_{}_equals_tp1",
    ):
        assert _passed(log, check.format("tp2pp2sp")), log[-4000:]


def test_sequence_parallel_with_per_head_qk_norms_equals_tp2(parallel_log):
    assert _passed(parallel_log, "qk_norm_model_tp2sp_equals_tp2"), parallel_log[-4000:]


def test_vocab_parallel_kernel_at_tp2_matches_naive_log_softmax(parallel_log):
    assert _passed(parallel_log, "vocab_parallel_kernel_matches_naive_at_tp2"), parallel_log[-4000:]
