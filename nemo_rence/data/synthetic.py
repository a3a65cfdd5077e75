"""Synthetic verifiable arithmetic: the embedded default task and the tests' task.

Problems like ``Compute 47 + 8 * 31 - 5.`` with an exact integer answer, difficulty controlled by
the operand size (``digits``) and the number of operations (``steps``). Generation is
deterministic in ``seed``. The train / held-out split of a problem is a hash of its text, not of
the seed, so a problem is in the same split for every seed and the splits can never overlap.
Records ask for their answer as a number (``metadata["answer_form"] = "number"``): the grader's
symbolic equivalence alone would accept the problem's own expression, ``\\boxed{47 + 8 * 31 - 5}``
(:func:`nemo_rence.rewards.math.enforce_answer_form`).

Example::

    train = generate_arithmetic(100, ArithmeticConfig(digits=2, steps=2, seed=0))
    test = generate_arithmetic(20, ArithmeticConfig(digits=2, steps=2, seed=1), split="heldout")
    assert not {r.problem for r in train} & {r.problem for r in test}
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass

from nemo_rence.data.records import PromptRecord

OPERATIONS = ("+", "-", "*")
SPLITS = ("train", "heldout")


@dataclass
class ArithmeticConfig:
    """Difficulty and determinism of the arithmetic task.

    Attributes:
        digits: digits per operand (1: 0-9, 2: 10-99, ...); 1 to 12.
        steps: number of operations per problem (1: ``a + b``; 3: ``a + b * c - d``); 1 to 16.
        operations: operators to draw from, a subset of ("+", "-", "*"); usual precedence.
        heldout_fraction: share of the problem space assigned to the held-out split, in (0, 1).
        seed: random seed; same seed, same problems.
    """

    digits: int = 2
    steps: int = 1
    operations: tuple[str, ...] = OPERATIONS
    heldout_fraction: float = 0.1
    seed: int = 0

    def __post_init__(self) -> None:
        if not 1 <= self.digits <= 12:
            raise ValueError(f"digits must be in 1..12, got {self.digits!r}")
        if not 1 <= self.steps <= 16:
            raise ValueError(f"steps must be in 1..16, got {self.steps!r}")
        self.operations = tuple(self.operations)
        bad = [op for op in self.operations if op not in OPERATIONS]
        if not self.operations or bad:
            raise ValueError(
                f"operations must be a non-empty subset of {OPERATIONS}, got {self.operations!r}"
            )
        if not 0 < self.heldout_fraction < 1:
            raise ValueError(f"heldout_fraction must be in (0, 1), got {self.heldout_fraction!r}")


def evaluate(operands: list[int], ops: list[str]) -> int:
    """Value of ``operands[0] ops[0] operands[1] ...`` with ``*`` before ``+``/``-``."""
    terms: list[int] = [operands[0]]
    signs: list[int] = [1]
    for op, x in zip(ops, operands[1:], strict=True):
        if op == "*":
            terms[-1] *= x
        else:
            terms.append(x)
            signs.append(1 if op == "+" else -1)
    return sum(s * t for s, t in zip(signs, terms, strict=True))


def split_of(expression: str, heldout_fraction: float) -> str:
    """ "heldout" or "train", from a stable hash of the expression text."""
    h = int.from_bytes(hashlib.blake2b(expression.encode(), digest_size=8).digest(), "big")
    return "heldout" if (h % 1_000_000) < heldout_fraction * 1_000_000 else "train"


def generate_arithmetic(
    n: int, config: ArithmeticConfig | None = None, split: str = "train"
) -> list[PromptRecord]:
    """``n`` distinct arithmetic problems of ``split`` ("train" or "heldout").

    Raises:
        ValueError: if ``split`` is unknown or the problem space of ``config`` is too small to
            hold ``n`` distinct problems of that split.
    """
    cfg = config or ArithmeticConfig()
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    rng = random.Random(f"arith:{cfg.seed}:{cfg.digits}:{cfg.steps}:{''.join(cfg.operations)}")
    lo = 0 if cfg.digits == 1 else 10 ** (cfg.digits - 1)
    hi = 10**cfg.digits - 1
    out: list[PromptRecord] = []
    seen: set[str] = set()
    attempts = 0
    max_attempts = 200 * n + 1000
    while len(out) < n:
        attempts += 1
        if attempts > max_attempts:
            raise ValueError(
                f"could not draw {n} distinct {split} problems with digits={cfg.digits}, "
                f"steps={cfg.steps}, operations={cfg.operations}: the space is too small"
            )
        operands = [rng.randint(lo, hi) for _ in range(cfg.steps + 1)]
        ops = [rng.choice(cfg.operations) for _ in range(cfg.steps)]
        expr = str(operands[0]) + "".join(
            f" {op} {x}" for op, x in zip(ops, operands[1:], strict=True)
        )
        if expr in seen or split_of(expr, cfg.heldout_fraction) != split:
            continue
        seen.add(expr)
        digest = hashlib.blake2b(expr.encode(), digest_size=6).hexdigest()
        out.append(
            PromptRecord(
                id=f"arith-{digest}",
                problem=f"Compute {expr}.",
                answer=str(evaluate(operands, ops)),
                source="synthetic",
                # the problem is an expression: only its value, written as a number, is correct
                metadata={
                    "digits": cfg.digits,
                    "steps": cfg.steps,
                    "split": split,
                    "answer_form": "number",
                },
            )
        )
    return out
