"""The golden CPU smoke run: the real entry point, ``python -m nemo_rence train``, for 2
iterations on the tiny Llama of :mod:`nemo_rence.tiny`, whose metrics are compared with
``tests/golden/tiny_smoke.json`` by ``tests/integration/test_golden_smoke.py``.

A random-init model never writes ``\\boxed{...}``, so every reward would be 0, every group
degenerate and every loss exactly 0: such a golden file could not see a flipped loss sign. The
smoke model is therefore the tiny Llama (random q/k/v and MLP input weights) made to act as a
*boxing bigram*: the attention and MLP outputs are zeroed, so each layer is the identity at the
start, and the embedding and output head are set so the next token depends on the last one,
``\\n -> \\ -> b -> o -> x -> e -> d -> { -> digit -> } -> <|im_end|>``, each step with
probability ~0.9 (any other token restarts the chain at ``\\``). About half the rollouts box a
random digit (reward 0.1, or 1 when the digit is the answer) and the rest do not (0): groups
contrast, the ReNCE loss, its gradient and the KL term are non-zero from the first update, and
every weight (zeroed ones included) gets gradients. The overrides (:data:`OVERRIDES`) make the
KL term and the adaptive controller large enough to show within the tolerance (:data:`RTOL`).

Regenerate the golden file (after a deliberate change of the math) from the repository root::

    python -m tests.golden.update
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

GOLDEN = Path(__file__).resolve().parent / "tiny_smoke.json"

ITERATIONS = 2

OVERRIDES = [
    "filter.batch_size=2",
    "filter.max_draws=8",
    "filter.unsolved=keep_if_contrast",  # the random-digit boxer rarely solves a group
    "rollout.temperature=1.0",
    "optim.mini_batch_size=1",
    "optim.n_update=2",
    "optim.lr=1e-2",  # 4 updates move the policy enough that the KL term shows in loss/total
    "optim.lr_schedule=constant",  # the CPU scale's cosine decay would hide it in iteration 2
    "kl.init=0.2",  # lambda * k3 is ~1% of loss/total: a wrong KL coefficient or sign shows
    "kl.horizon=64",  # the adaptive controller moves lambda ~2.5% per iteration, not 6e-5
    "rollout.group_size=4",
    "rollout.max_new_tokens=16",
    "data.max_prompt_tokens=512",
    "run.eval_size=4",
]
"""Added to ``model=hf model.hf_dir=<boxing model>``; the rest is the embedded default config
(algorithm=rence, scale=cpu: the ReNCE loss with the adaptive KL controller and the filter)."""

EXCLUDED_PREFIXES = ("time/",)
"""Wall-clock stage timings: differ on every run."""
EXCLUDED_KEYS = frozenset({"refit/seconds"})
"""Other wall-clock measurements: differ on every run."""

RTOL = 1e-3
ATOL = 1e-6
"""Float tolerance: ``|actual - golden| <= ATOL + RTOL * |golden|``.

The run is deterministic on one machine (seeded sampling, fp32, one thread). On another CPU or
BLAS build the summation order of the matmuls changes values by ~1e-7 relative, growing a little
through 4 AdamW steps: 1e-3 leaves two orders of magnitude or more for that. A real change is
larger: a flipped loss sign changes loss/* by 200%, a wrong KL sign or coefficient in the loss
moves loss/total by ~5% (lambda * k3 is ~2.5% of it here), a wrong adaptive-controller step moves
kl/coef by ~2.5% per iteration, and a changed sampler, filter or reward changes counts, which
compare exactly (:func:`is_count`)."""

NOISE_ATOL = {
    "refit/logprob_gap": 1e-5,
    "refit/logprob_gap_max": 1e-5,
    "refit/token_mult_prob_error": 1e-5,
}
"""Float noise between two implementations (HF engine vs Megatron policy, ~1e-7 here): held to a
bound, not to its value, which depends on the CPU. A broken refit shows gaps of 1e-2 or more."""


def is_excluded(key: str) -> bool:
    return key.startswith(EXCLUDED_PREFIXES) or key in EXCLUDED_KEYS


def is_count(value: object) -> bool:
    """Non-zero whole numbers in the golden file (tokens, rollouts, draws, bytes, histogram bins,
    versions, rates of 1.0) compare exactly; a golden 0.0 compares within ATOL, which is exact for
    a count too."""
    return isinstance(value, int | float) and value != 0 and float(value).is_integer()


def write_boxing_model(path: Path, margin: float = 7.75) -> Path:
    """The tiny Llama of :func:`nemo_rence.tiny.write_tiny_hf_dir` turned into a boxing bigram
    (module docstring). ``margin`` is the logit of a chain step over the other 258 tokens:
    ``e^7.75 / (e^7.75 + 258) ~ 0.9``."""
    import torch
    from safetensors.torch import load_file, save_file

    from nemo_rence.tiny import byte_tokenizer, write_tiny_hf_dir

    write_tiny_hf_dir(path, layers=2, hidden=64, seed=0, tie=False)
    tok = byte_tokenizer()

    def ids(text: str) -> list[int]:
        return list(tok.encode(text, add_special_tokens=False))

    chain = ids("\\boxed{")  # states 1..7, state 0: any other token
    digits, close, eos = ids("0123456789"), ids("}")[0], tok.eos_token_id
    weights_file = path / "model.safetensors"
    weights = load_file(weights_file)
    hidden = weights["model.embed_tokens.weight"].shape[1]
    scale = math.sqrt(hidden)  # RMSNorm of a one-hot row is sqrt(hidden) at its dimension
    embed = torch.zeros_like(weights["model.embed_tokens.weight"])
    head = torch.zeros_like(weights["lm_head.weight"])
    embed[:, 0] = 1.0  # state 0 -> "\"
    head[chain[0], 0] = margin / scale
    for state, token in enumerate(chain, start=1):  # "\"->b->o->x->e->d->{, then "{"->digits
        embed[token] = 0.0
        embed[token, state] = 1.0
        for nxt in [chain[state]] if state < len(chain) else digits:
            head[nxt, state] = margin / scale
    for d in digits:  # digit -> "}"
        embed[d] = 0.0
        embed[d, len(chain) + 1] = 1.0
    head[close, len(chain) + 1] = margin / scale
    embed[close] = 0.0  # "}" -> <|im_end|>
    embed[close, len(chain) + 2] = 1.0
    head[eos, len(chain) + 2] = margin / scale
    weights["model.embed_tokens.weight"] = embed
    weights["lm_head.weight"] = head
    for name in weights:
        if name.endswith(("self_attn.o_proj.weight", "mlp.down_proj.weight")):
            weights[name] = torch.zeros_like(weights[name])
    save_file(weights, weights_file, metadata={"format": "pt"})
    return path


def command(out: Path, model_dir: Path, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "nemo_rence",
        "train",
        "model=hf",
        f"model.hf_dir={model_dir}",
        *OVERRIDES,
        f"run.out_dir={out}",
        f"run.iterations={ITERATIONS}",
        *extra,
        "--no-progress",
    ]


def run_smoke(work: Path, *extra: str) -> Path:
    """Write the boxing model under ``work``, run the entry point (with ``extra`` overrides),
    return the run directory."""
    model_dir = write_boxing_model(work / "boxing-model")
    out = work / "run"
    env = dict(os.environ, OMP_NUM_THREADS="1", OMP_WAIT_POLICY="PASSIVE")
    proc = subprocess.run(
        command(out, model_dir, *extra), env=env, capture_output=True, text=True, timeout=900
    )
    if proc.returncode != 0:
        raise AssertionError(
            f"smoke run failed (exit {proc.returncode}):\n{proc.stdout[-3000:]}{proc.stderr[-5000:]}"
        )
    return out


def golden_rows(run_dir: Path) -> dict[str, dict[str, float | None]]:
    """Each line of ``metrics.jsonl`` under a label (``iter1/train``, ``iter0/eval_before``),
    without the excluded (timing) keys."""
    rows: dict[str, dict[str, float | None]] = {}
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        row = json.loads(line)
        tags = [k.removeprefix("eval/is_") for k in row if k.startswith("eval/is_")]
        label = f"iter{row['iteration']}/" + (f"eval_{tags[0]}" if tags else "train")
        assert label not in rows, f"two metrics lines labelled {label}"
        rows[label] = {k: v for k, v in sorted(row.items()) if not is_excluded(k)}
    return rows


def compare(actual: dict, golden: dict) -> list[str]:
    """Every difference between two :func:`golden_rows` results, one line each."""
    problems = []
    for label in sorted(set(golden) | set(actual)):
        if label not in actual or label not in golden:
            problems.append(f"{label}: {'missing' if label not in actual else 'unexpected'} row")
            continue
        want, got = golden[label], actual[label]
        for key in sorted(set(want) | set(got)):
            if key not in got or key not in want:
                which = "missing" if key not in got else "new (not in the golden file)"
                problems.append(f"{label} {key}: {which}")
                continue
            g, a = want[key], got[key]
            if g is None or a is None:
                ok = a == g
            elif key in NOISE_ATOL:
                ok = abs(a - g) <= NOISE_ATOL[key]
            elif is_count(g):
                ok = a == g
            else:
                ok = math.isclose(a, g, rel_tol=RTOL, abs_tol=ATOL)
            if not ok:
                problems.append(f"{label} {key}: {a!r} != golden {g!r}")
    return problems
