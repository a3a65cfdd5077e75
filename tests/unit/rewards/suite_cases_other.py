"""Cases of the math-reward test suites of TRL, verl, rllm, Qwen2.5-Math and NeMo-RL, as data.

Each case quotes the (completion, solution) pair and the verdict a test asserts, with its source
in a comment; the reward-specific parts (format rewards, reward scales) are left out. Only the
cases are quoted, none of the suites' code. ``opts["match"]`` is "default" (math-verify's
``parse`` defaults, as these projects call it) or "letters" for multiple-choice golds.
"""

from __future__ import annotations

from tests.unit.rewards.suite_case import Case

_D = {"match": ("default",)}
_L = {"match": ("letters",)}

# huggingface/trl tests/test_rewards.py (TestAccuracyReward, TestReasoningAccuracyReward)
TRL: list[Case] = [
    Case("fraction", r"\frac{63}{400}", r"\boxed{\frac{63}{400}}", True, _D),
    Case("fraction", "63/400", r"\boxed{\frac{63}{400}}", True, _D),
    Case("fraction", r"\frac{63}{400}", r"\boxed{\frac{64}{400}}", False, _D),
    Case("number", "6", r"\boxed{3}", False, _D),
    Case("fraction", r"\frac{1}{3}", r"\boxed{\frac{1}{3}}", True, _D),
    Case(
        "fraction",
        r"\frac{63}{400}",
        r"<think> Reasoning content </think> \boxed{\frac{63}{400}}",
        True,
        _D,
    ),
    Case(
        "fraction",
        r"\frac{63}{400}",
        r"<think> Reasoning content </think> \boxed{\frac{64}{400}}",
        False,
        _D,
    ),
]

# volcengine/verl tests/utils/reward_score/test_numeric_canonicalization_on_cpu.py
VERL: list[Case] = [
    Case("number", r"\boxed{033}", "33", True, _D),
    Case("number", r"\boxed{+033}", "33", True, _D),
    Case("number", r"\boxed{-0}", "0", True, _D),
    Case("number", r"\boxed{000}", "0", True, _D),
]

# rllm-org/rllm tests/rewards/test_math_reward.py and tests/rewards/test_math_utils.py
RLLM: list[Case] = [
    Case("number", "4", "<think>2 + 2 = 4</think>\nThe answer is \\boxed{4}.", True, _D),
    Case("fraction", "1/2", "<think>...</think>\nThe answer is \\boxed{0.5}.", True, _D),
    Case("number", "4", "<think>2 + 2 = 5</think>\nThe answer is \\boxed{5}.", False, _D),
    Case(
        "equation",
        "x = 2, x = -3",
        "<think>...</think>\nThe answer is \\boxed{x = 2, x = -3}.",
        True,
        _D,
    ),
    Case("number", r"\boxed{24}", "<think>...</think>\nThe answer is \\boxed{24}.", True, _D),
    Case("number", "3.14159", "<think>...</think>\nThe answer is \\boxed{3.14159}.", True, _D),
    Case("fraction", "1/2", "<think>...</think>\nThe answer is \\boxed{\\frac{1}{2}}.", True, _D),
    Case("number", "10", "<think>5 + 5 = 10</think>\nThe answer is \\boxed{10}.", True, _D),
    Case("number", "10", "<think>5 + 5 = 11</think>\nThe answer is \\boxed{11}.", False, _D),
    Case("number", "7", "<think>...</think>\nThe answer is \\boxed{42}.", False, _D),
    Case("number", "0", "<think>...</think>\nThe answer is \\boxed{0}.", True, _D),
    Case("number", r"\boxed{0}", "<think>...</think>\nThe answer is \\boxed{0}.", True, _D),
    Case("empty", "", "", False, _D),
    Case("empty", "  ", "   ", False, _D),
    Case("empty", "42", "", False, _D),
    Case("empty", "", "42", False, _D),
    Case("number", "42", "42", True, _D),
]

# QwenLM/Qwen2.5-Math evaluation/grader.py (TestMathEqual: test_math_equal, test_compare_equations)
QWEN: list[Case] = [
    Case("number", "10", "10", True, _D),
    Case("percent", "0.1", "10%", True, _D),
    Case("sequence", "[1, 2, 3]", "[1, 2, 3]", True, _D),
    Case(
        "matrix",
        r"\begin{pmatrix}1&2\\3&4\end{pmatrix}",
        r"\begin{pmatrix}1&2\\3&4\end{pmatrix}",
        True,
        _D,
    ),
    Case("equation", "x = y", "x = y", True, _D),
    Case("number", "20", "10", False, _D),
    Case("equation", "x = z", "x = y", False, _D),
    Case("equation", "10", "x = 10", True, _D),
    Case("equation", "x = 10", "10", True, _D),
]

# NVIDIA-NeMo/RL tests/unit/environments/test_math_environment.py (math and multichoice data)
NEMO_RL: list[Case] = [
    Case("number", "4", "2 + 2 = \\boxed{4}", True, _D),
    Case("number", "\\boxed{12}", "3 * 4 = \\boxed{12}", True, _D),
    Case("number", "\\boxed{5}", "10 - 5 = \\boxed{5}", True, _D),
    Case("fraction", "4.0", "2 + 2 = \\boxed{\\frac{8}{2}}", True, _D),
    Case("number", "\\boxed{12}", "3 * 4 = 13", False, _D),
    Case("letter", "C", "\nAnswer: C", True, _L),
    Case("letter", "B", "\nAnswer: B", True, _L),
    Case("letter", "B", "\nAnswer: D", False, _L),
    Case("letter", "C", "\n答案: C", True, _L),
    Case("letter", "B", "\n答案: B", True, _L),
    Case("letter", "B", "\n答案: D", False, _L),
]
