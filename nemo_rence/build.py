"""Build the loop's components from a validated :class:`~nemo_rence.config.TrainConfig`.

Order (cheap checks first, so a bad path fails before megatron starts):

1. model directory: SmolLM2 from the shipped GGUF (converted once, cached), a tiny random
   model written in code, or the user's HF directory;
2. tokenizer, prompt template, datasets (train / held-out), the resumable prompt sampler;
3. torch.distributed + megatron parallel state (gloo on CPU, NCCL on GPU);
4. the Megatron policy, loaded from the HF weights;
5. the rollout engines on the same weights, one on each rank that
   :func:`~nemo_rence.rollout.layout.engine_layout` names (one per model replica for the
   in-process 'hf' engine, one per ``rollout.tensor_parallel`` ranks otherwise); the reward's
   grader pool.

The result is a :class:`~nemo_rence.loop.Components`; :class:`~nemo_rence.loop.Trainer` drives
it and ``Components.close()`` releases the grader's workers.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from nemo_rence.config import TrainConfig
from nemo_rence.data.records import PromptRecord
from nemo_rence.data.source import PromptSource
from nemo_rence.infra.distributed import barrier, check_world_size
from nemo_rence.loop import Components
from nemo_rence.model_sources import resolve_model_dir
from nemo_rence.registry import Registry
from nemo_rence.rollout.layout import EngineLayout, engine_layout_of_config

__all__ = [
    "ENGINES",
    "build_components",
    "build_engine",
    "engine_placement",
    "load_benchmarks",
    "resolve_eos_ids",
]


def _datasets(
    cfg: TrainConfig,
) -> tuple[list[PromptRecord], list[PromptRecord], dict[str, float]]:
    """Training and held-out prompts, and the load report's metrics (file-based data only)."""
    from nemo_rence.data.datasets import load_datasets
    from nemo_rence.infra.distributed import rank

    train, heldout, report = load_datasets(cfg.data)
    if not cfg.data.from_files:  # the synthetic default prints and logs what it always did
        return train, heldout, {}
    if rank() == 0:
        print(report.summary(), flush=True)
    return train, heldout, report.metrics()


def load_benchmarks(cfg: TrainConfig) -> list[tuple[Any, Any]]:
    """``eval.benchmarks`` read in their public schemas (the name picks the schema when it is
    a registered benchmark); a file without a usable row is a config error. Rank 0 evaluates,
    so only rank 0 reads them."""
    from nemo_rence.config import ConfigError
    from nemo_rence.infra.distributed import rank

    if rank() != 0:
        return []
    from nemo_rence.evaluation.inputs import (
        EvalInputError,
        load_benchmark_file,
        parse_benchmark_arg,
    )

    out = []
    for name, path in cfg.eval.benchmarks.items():
        try:
            bench = parse_benchmark_arg(f"{name}={path}")
            out.append((bench, load_benchmark_file(bench)))
        except EvalInputError as err:
            raise ConfigError(f"eval.benchmarks.{name}: {err}") from err
    return out


def resolve_eos_ids(hf_dir: Path, tokenizer: Any) -> tuple[int, ...]:
    """The EOS token ids: ``generation_config.json``'s in ``hf_dir``, else the tokenizer's."""
    from transformers import GenerationConfig

    try:
        eos = GenerationConfig.from_pretrained(hf_dir).eos_token_id
    except OSError:  # no generation_config.json
        eos = None
    eos = eos if eos is not None else tokenizer.eos_token_id
    return tuple(int(e) for e in eos) if isinstance(eos, list | tuple) else (int(eos),)


EngineBuilder = Callable[[TrainConfig, Path, Any, tuple[int, ...]], Any]
"""``(config, HF dir, tokenizer, eos ids) -> GenerationEngine``."""

ENGINES: Registry[EngineBuilder] = Registry("rollout.engine")
"""The rollout engines by ``rollout.engine``; :data:`nemo_rence.config.ENGINE_NAMES` lists them
for the config check (kept equal by a test)."""


@ENGINES.register("hf")
def _hf_engine(cfg: TrainConfig, hf_dir: Path, tokenizer: Any, eos_ids: tuple[int, ...]) -> Any:
    """transformers' generate on the policy's own tensors (CPU default)."""
    from transformers import AutoModelForCausalLM

    from nemo_rence.rollout.hf_engine import HFEngine

    model = AutoModelForCausalLM.from_pretrained(hf_dir, dtype=torch.float32)
    return HFEngine(
        model,
        eos_token_ids=eos_ids,
        pad_token_id=tokenizer.pad_token_id or 0,
        share_weights=True,  # in process with the policy: refits hand over its tensors
    )


@ENGINES.register("vllm")
def _vllm_engine(cfg: TrainConfig, hf_dir: Path, tokenizer: Any, eos_ids: tuple[int, ...]) -> Any:
    """vLLM in its own process, outside this rank's torch.distributed world."""
    from nemo_rence.rollout.vllm_engine import VLLMConfig, VLLMEngine

    dtype = "float32" if not torch.cuda.is_available() else "bfloat16"
    return VLLMEngine(
        VLLMConfig(
            model_dir=str(hf_dir),
            dtype=dtype,
            tensor_parallel_size=cfg.rollout.tensor_parallel,
            max_model_len=cfg.data.max_prompt_tokens + cfg.rollout.max_new_tokens,
            seed=cfg.run.seed,
            kv_cache_memory_bytes=None if torch.cuda.is_available() else 2 * 2**30,
        )
    )


@ENGINES.register("trtllm")
def _trtllm_engine(cfg: TrainConfig, hf_dir: Path, tokenizer: Any, eos_ids: tuple[int, ...]) -> Any:
    """TensorRT-LLM's LLM API (GPU): weights updated in place every iteration."""
    from nemo_rence.rollout.trtllm_engine import TRTLLMConfig, TRTLLMEngine

    return TRTLLMEngine(
        TRTLLMConfig(
            model_dir=str(hf_dir),
            eos_token_ids=eos_ids,
            pad_token_id=tokenizer.pad_token_id,
            tensor_parallel_size=cfg.rollout.tensor_parallel,
        )
    )


def build_engine(cfg: TrainConfig, hf_dir: Path, tokenizer: Any, eos_ids: tuple[int, ...]) -> Any:
    """The rollout engine named by ``rollout.engine``, on the same starting weights as the policy."""
    return ENGINES.get(cfg.rollout.engine)(cfg, hf_dir, tokenizer, eos_ids)


def engine_placement(cfg: TrainConfig, rank: int, world_size: int) -> tuple[EngineLayout, bool]:
    """The run's engines and whether ``rank`` builds one (``nemo-rence plan`` budgets the same
    :func:`~nemo_rence.rollout.layout.engine_layout`)."""
    layout = engine_layout_of_config(cfg, world_size)
    return layout, layout.replica_of(rank) is not None


def build_components(cfg: TrainConfig, work_dir: Path) -> Components:
    """Everything the trainer drives, in the order of the module docstring (collective).

    Long on purpose: the build order is the contract (cheap checks before megatron starts, rank 0
    prepares the model directory while the others wait), so it reads as one sequence.
    """
    from transformers import AutoTokenizer

    from nemo_rence.arch import ArchSpec
    from nemo_rence.data.template import PromptConfig, encode_prompt, filter_by_length
    from nemo_rence.policy.megatron.parallel import init_parallel, seed_all
    from nemo_rence.policy.megatron.policy import MegatronPolicy, MegatronPolicyConfig
    from nemo_rence.policy.reference import build_reference
    from nemo_rence.rewards.reward_fn import MathReward

    if cfg.run.malloc_mmap_threshold_mb > 0:
        from nemo_rence.infra.allocator import set_mmap_threshold

        set_mmap_threshold(cfg.run.malloc_mmap_threshold_mb << 20)
    check_world_size(cfg, int(os.environ.get("WORLD_SIZE", "1")))
    # Process groups first (they also seed torch): rank 0 alone prepares a model directory, the
    # others wait for it.
    info = init_parallel(
        cfg.policy.tensor_parallel, cfg.policy.pipeline_parallel, seed=cfg.run.seed
    )
    if info.rank == 0:
        hf_dir = resolve_model_dir(cfg.model, work_dir, cfg.run.seed)
    barrier()
    hf_dir = resolve_model_dir(cfg.model, work_dir, cfg.run.seed)
    tokenizer = AutoTokenizer.from_pretrained(hf_dir)
    prompt_cfg = PromptConfig(
        template=cfg.data.template,
        chat=cfg.data.chat_template,
        max_prompt_tokens=cfg.data.max_prompt_tokens,
    )
    train, heldout, data_metrics = _datasets(cfg)
    train, dropped = filter_by_length(train, prompt_cfg, tokenizer)
    heldout, _ = filter_by_length(heldout, prompt_cfg, tokenizer)
    if not train:
        raise ValueError(
            f"no training prompt fits data.max_prompt_tokens={cfg.data.max_prompt_tokens} "
            f"({dropped} dropped)"
        )
    source = PromptSource(
        train, draw=cfg.rollout.prompts_per_draw or cfg.filter.batch_size, seed=cfg.data.seed
    )
    on_gpu = torch.cuda.is_available()
    dtype = (
        torch.bfloat16
        if cfg.policy.precision == "bf16" or (cfg.policy.precision == "auto" and on_gpu)
        else torch.float32
    )
    # The policy's RNG streams start from the run's seed whatever preparing the model directory
    # and the data drew (writing the tiny model reseeds torch on rank 0 only).
    seed_all(cfg.run.seed)
    hf_config = json.loads((hf_dir / "config.json").read_text())
    arch = ArchSpec.from_hf_config(hf_config)
    policy = MegatronPolicy(arch, MegatronPolicyConfig.from_train_config(cfg, dtype))
    policy.load_hf(hf_dir)
    reference = build_reference(cfg, policy)  # only for a loss that declares it needs one

    eos_ids = resolve_eos_ids(hf_dir, tokenizer)
    layout, hosts = engine_placement(cfg, info.rank, info.world_size)
    engine = build_engine(cfg, hf_dir, tokenizer, eos_ids) if hosts else None
    if engine is not None and cfg.rollout.engine == "hf" and info.tp == info.pp == 1:
        # The hf engine shares the policy's parameters from the start (all but the fused q/k/v):
        # the weights exist once, and the copy it loaded is freed.
        engine.update_weights(policy.export_weights(), version=engine.version)
    reward = MathReward(cfg.reward)

    def decode(tokens: Any) -> str:
        return str(tokenizer.decode(list(tokens), skip_special_tokens=True))

    return Components(
        policy=policy,
        engine=engine,
        reward=reward,
        encode=lambda record: encode_prompt(record, prompt_cfg, tokenizer),
        decode=decode,
        eos_token_ids=eos_ids,
        source=source,
        heldout=heldout[: cfg.run.eval_size],
        data_metrics=data_metrics,
        benchmarks=load_benchmarks(cfg),
        reference=reference,
        layout=layout,
    )
