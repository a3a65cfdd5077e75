"""The prompt template (ReNCE section 4.1, ConSPO Appendix C) and prompt-length filtering.

The problem is inserted into a template, then either sent through the tokenizer's chat template
as one user message (``chat=True``, the default for instruct models) or used raw.

Example::

    cfg = PromptConfig(template="rence", chat=False)
    render_prompt("What is 1+1?", cfg)
    # 'Please solve the following math problem: What is 1+1?. The assistant first thinks ...'
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from nemo_rence.data.records import PromptRecord

RENCE_TEMPLATE = (
    "Please solve the following math problem: {problem}. The assistant first thinks about the "
    "reasoning process step by step and then provides the user with the answer. Return the final "
    "answer in \\boxed{} tags, for example \\boxed{1}. Let's solve this step by step."
)
"""The unified template of ReNCE section 4.1 (from Zheng et al. 2025b), used for training and
evaluation. ``{problem}`` is replaced literally (no ``str.format``: problems contain braces)."""

CONSPO_TEMPLATE = "{problem} Let's think step by step and output the final answer within \\boxed{}."
"""ConSPO Appendix C (Figure 3)."""

TEMPLATES: dict[str, str] = {
    "rence": RENCE_TEMPLATE,
    "conspo": CONSPO_TEMPLATE,
    "plain": "{problem}",
}
"""Template name -> template text."""


@dataclass
class PromptConfig:
    """How a problem becomes the prompt the policy sees.

    Attributes:
        template: a name in ``TEMPLATES`` ("rence", "conspo", "plain") or a custom template
            text containing ``{problem}``.
        chat: wrap the rendered text as a user message with the tokenizer's chat template
            (``add_generation_prompt=True``); False uses the rendered text as is.
        system_prompt: optional system message (chat mode only; None: the model's default).
        max_prompt_tokens: prompts longer than this (in tokens) are filtered out (paper: 1536).
    """

    template: str = "rence"
    chat: bool = True
    system_prompt: str | None = None
    max_prompt_tokens: int = 1536

    def __post_init__(self) -> None:
        if self.template not in TEMPLATES and "{problem}" not in self.template:
            raise ValueError(
                f"template must be one of {sorted(TEMPLATES)} or a text containing "
                f"'{{problem}}', got {self.template!r}"
            )
        if not isinstance(self.max_prompt_tokens, int) or self.max_prompt_tokens < 1:
            raise ValueError(
                f"max_prompt_tokens must be an integer >= 1, got {self.max_prompt_tokens!r}"
            )
        if self.system_prompt is not None and not self.chat:
            raise ValueError("system_prompt needs chat=True (raw prompts have no system turn)")

    @property
    def template_text(self) -> str:
        """The template with its ``{problem}`` placeholder."""
        return TEMPLATES.get(self.template, self.template)


def render_prompt(problem: str, config: PromptConfig) -> str:
    """The user-message text: the template with ``{problem}`` replaced."""
    return config.template_text.replace("{problem}", problem.strip())


def build_prompt(record: PromptRecord | str, config: PromptConfig, tokenizer: Any = None) -> str:
    """The full prompt text for ``record`` (chat-formatted when ``config.chat``).

    Raises:
        ValueError: chat mode without a tokenizer, or a tokenizer without a chat template.
    """
    problem = record.problem if isinstance(record, PromptRecord) else record
    text = render_prompt(problem, config)
    if not config.chat:
        return text
    if tokenizer is None or not getattr(tokenizer, "chat_template", None):
        raise ValueError(
            "PromptConfig.chat=True needs a tokenizer with a chat template; pass one or set "
            "chat=False for raw prompts"
        )
    messages = []
    if config.system_prompt is not None:
        messages.append({"role": "system", "content": config.system_prompt})
    messages.append({"role": "user", "content": text})
    return str(tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True))


def encode_prompt(record: PromptRecord | str, config: PromptConfig, tokenizer: Any) -> list[int]:
    """Token ids of the prompt (no special tokens added twice: the chat template has them)."""
    text = build_prompt(record, config, tokenizer)
    ids = tokenizer(text, add_special_tokens=not config.chat)["input_ids"]
    return [int(i) for i in ids]


def filter_by_length(
    records: Sequence[PromptRecord], config: PromptConfig, tokenizer: Any
) -> tuple[list[PromptRecord], int]:
    """Keep records whose prompt fits in ``config.max_prompt_tokens`` tokens.

    Returns:
        ``(kept, dropped)``: the fitting records in order and the number dropped.
    """
    kept = [
        r for r in records if len(encode_prompt(r, config, tokenizer)) <= config.max_prompt_tokens
    ]
    return kept, len(records) - len(kept)
