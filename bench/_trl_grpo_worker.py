"""TRL side of ``bench/trl_compare.py``: GRPOTrainer steps on the same model, prompts and reward.

Run by the TRL environment's interpreter (TRL is not a project dependency), never imported by
the project::

    /work/trl-venv/bin/python bench/_trl_grpo_worker.py SPEC.json RESULT.json

``SPEC.json`` (written by ``trl_compare.py``) holds the HF model directory, the prompts (chat-
formatted text plus the token ids our trainer uses for them) with their gold answers, and the
sizes. One optimizer step sees ``prompts x k`` completions: ``num_generations = k``,
``per_device_train_batch_size = micro_batch``, ``gradient_accumulation_steps = prompts * k /
micro_batch`` (so ``steps_per_generation`` defaults to it and one generation batch feeds exactly
one optimizer step; ``num_iterations = 1``, so no separate old-logprob forward). fp32, CPU, no
vLLM, beta = 0 (TRL's default: no reference model), constant lr and AdamW settings as ours, the
same sampling temperature.
Gradient checkpointing is TRL's default (on in TRL 1.x) unless the spec says otherwise.

The reward is the project's own ``nemo_rence.rewards.math.score`` (1 / 0.1 / 0) with the record's
answer form (``enforce_answer_form``, as ``MathReward`` applies it), imported from the repository
path and called in-process. Per-step wall time comes from a ``TrainerCallback``
(``on_step_begin`` .. ``on_step_end``); the stage split from TRL's own ``profiling_context``
timers (``transformers.generate``, the reward function, ``_prepare_inputs``, ``compute_loss``),
captured by wrapping ``ProfilingContext._log_metrics``. Peak RSS is ``ru_maxrss`` of this process
plus the peak RSS (``VmHWM``) of any live descendant.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path

from _rss import GIB, descendants_hwm_bytes, maxrss_bytes  # standard library only


def main(spec_path: str, result_path: str) -> None:
    spec = json.loads(Path(spec_path).read_text())
    sys.path.insert(0, spec["repo_root"])  # the project's reward, nothing else of it
    import torch

    torch.set_num_threads(spec["threads"])

    import accelerate
    import datasets
    import transformers
    import trl
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer
    from trl.extras import profiling

    from nemo_rence.rewards.math import enforce_answer_form, score

    rss_start = maxrss_bytes()
    tokenizer = AutoTokenizer.from_pretrained(spec["hf_dir"])
    model = AutoModelForCausalLM.from_pretrained(spec["hf_dir"], dtype=torch.float32)
    rss_model = maxrss_bytes()
    prompts = spec["prompts"]
    ids_match = all(
        tokenizer(text=p["text"])["input_ids"] == p["ids"] for p in prompts
    )  # TRL tokenizes a text prompt with processing_class(text=...)

    def math_reward(
        completions: list[str], answer: list[str], answer_form: list[str], **_: object
    ) -> list[float]:
        return [
            enforce_answer_form(score(c, a), form).reward
            for c, a, form in zip(completions, answer, answer_form, strict=True)
        ]

    rows = [
        {"prompt": p["text"], "answer": p["answer"], "answer_form": p["answer_form"]}
        for p in prompts
    ]
    dataset = datasets.Dataset.from_list(rows)
    n = spec["prompts_per_step"] * spec["k"]
    steps = spec["warmup"] + spec["steps"]
    extra = {}
    if spec.get("gradient_checkpointing") is not None:  # None: TRL's default (True in TRL 1.x)
        extra["gradient_checkpointing"] = spec["gradient_checkpointing"]
    args = GRPOConfig(
        output_dir=spec["work_dir"],
        use_cpu=True,
        report_to="none",
        bf16=False,
        fp16=False,
        seed=spec["seed"],
        max_steps=steps,
        num_generations=spec["k"],
        per_device_train_batch_size=spec["micro_batch"],
        gradient_accumulation_steps=n // spec["micro_batch"],
        max_completion_length=spec["new_tokens"],
        temperature=spec["temperature"],
        top_p=1.0,
        top_k=0,
        beta=0.0,
        num_iterations=1,
        shuffle_dataset=False,  # step i gets prompts [i*P, (i+1)*P): the ones our trainer drew
        learning_rate=spec["lr"],
        lr_scheduler_type="constant",
        warmup_steps=0,
        weight_decay=spec["weight_decay"],
        max_grad_norm=spec["grad_clip"],
        logging_steps=1,
        save_strategy="no",
        disable_tqdm=True,
        dataloader_num_workers=0,
        use_vllm=False,
        **extra,
    )

    step_times: list[float] = []
    step_cpu: list[float] = []
    stages: list[dict[str, float]] = []
    step_logs: list[dict[str, float]] = []
    current: dict[str, float] = defaultdict(float)
    original_log = profiling.ProfilingContext._log_metrics

    def record(self: profiling.ProfilingContext, duration: float) -> None:
        current[self.name.split(".", 1)[-1]] += duration
        original_log(self, duration)

    profiling.ProfilingContext._log_metrics = record

    class StepTimer(TrainerCallback):
        def on_step_begin(self, args, state, control, **kwargs):
            current.clear()
            self.t0, self.c0 = time.perf_counter(), time.process_time()

        def on_step_end(self, args, state, control, **kwargs):
            step_times.append(time.perf_counter() - self.t0)
            step_cpu.append(time.process_time() - self.c0)
            stages.append(dict(current))

        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs and "completions/mean_length" in logs:
                step_logs.append({k: v for k, v in logs.items() if isinstance(v, int | float)})

    trainer = GRPOTrainer(
        model=model,
        reward_funcs=math_reward,
        args=args,
        train_dataset=dataset,
        processing_class=tokenizer,
        callbacks=[StepTimer()],
    )
    rss_built = maxrss_bytes()
    trainer.train()
    rss_peak = maxrss_bytes()
    children = descendants_hwm_bytes()

    per_step = []
    for seconds, cpu, st, log in zip(step_times, step_cpu, stages, step_logs, strict=False):
        generate = st.get("transformers.generate", 0.0)
        reward = st.get("math_reward", 0.0)
        prepare = st.get("_prepare_inputs", 0.0)
        loss_fwd = st.get("compute_loss", 0.0)
        per_step.append(
            {
                "step_s": seconds,
                "cpu_s": cpu,
                "generate_s": generate,
                "reward_s": reward,
                "prepare_other_s": max(prepare - generate - reward, 0.0),
                "loss_forward_s": loss_fwd,
                "backward_and_optimizer_s": max(seconds - prepare - loss_fwd, 0.0),
                "completions_mean_length": log.get("completions/mean_length"),
                "reward_mean": log.get("reward"),
            }
        )
    measured = per_step[spec["warmup"] :]
    split_keys = [k for k in per_step[0] if k.endswith("_s") and k != "cpu_s"] if per_step else []
    tokens_per_step = [
        round(s["completions_mean_length"] * n) if s["completions_mean_length"] else None
        for s in measured
    ]
    result = {
        "versions": {
            "python": sys.version.split()[0],
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "trl": trl.__version__,
            "accelerate": accelerate.__version__,
            "datasets": datasets.__version__,
        },
        "trainer": "trl.GRPOTrainer",
        "config": {
            "num_generations": args.num_generations,
            "per_device_train_batch_size": args.per_device_train_batch_size,
            "gradient_accumulation_steps": args.gradient_accumulation_steps,
            "generation_batch_size": args.generation_batch_size,
            "steps_per_generation": args.steps_per_generation,
            "max_completion_length": args.max_completion_length,
            "loss_type": args.loss_type,
            "beta": args.beta,
            "num_iterations": args.num_iterations,
            "optim": str(args.optim),
            "gradient_checkpointing": args.gradient_checkpointing,
            "torch_threads": torch.get_num_threads(),
        },
        "prompt_ids_match_ours": ids_match,
        "warmup_step_s": [s["step_s"] for s in per_step[: spec["warmup"]]],
        "measured_step_s": [s["step_s"] for s in measured],
        "iteration_s": statistics.median(s["step_s"] for s in measured) if measured else None,
        "iteration_cpu_s": statistics.median(s["cpu_s"] for s in measured) if measured else None,
        "stage_split_s": {
            k: statistics.median(s[k] for s in measured) for k in split_keys if measured
        },
        "per_step": per_step,
        "rollouts_per_step": n,
        "response_tokens_per_step": tokens_per_step,
        "peak_rss_gib": (rss_peak + children) / GIB,
        "rss_breakdown_gib": {
            "after_imports": rss_start / GIB,
            "after_model_load": rss_model / GIB,
            "after_trainer_init": rss_built / GIB,
            "after_train": rss_peak / GIB,
            "descendants_peak": children / GIB,
        },
    }
    Path(result_path).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
