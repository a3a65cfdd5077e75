"""A tiny random-init Llama with a byte-level tokenizer, built in code (tests and smoke runs).

Nothing is downloaded: the tokenizer maps each UTF-8 byte to one token (ids 0-255) plus three
special tokens with a ChatML chat template, so prompts, decoding and the grader all work end to
end. ``write_tiny_hf_dir(path)`` writes a complete Hugging Face directory (config, tokenizer,
safetensors) that every loader in the package accepts like a real checkpoint.
"""

from __future__ import annotations

from pathlib import Path

import torch

__all__ = ["CHAT_TEMPLATE", "byte_tokenizer", "write_tiny_hf_dir"]

SPECIALS = ("<|im_start|>", "<|im_end|>", "<pad>")
CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def byte_tokenizer():
    """A ``PreTrainedTokenizerFast``: one token per byte, ChatML specials, EOS ``<|im_end|>``."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {ch: i for i, ch in enumerate(sorted(alphabet))}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|im_end|>",
        bos_token="<|im_start|>",
        pad_token="<pad>",
    )
    fast.add_special_tokens({"additional_special_tokens": list(SPECIALS)})
    fast.chat_template = CHAT_TEMPLATE
    return fast


def write_tiny_hf_dir(
    path: str | Path, *, layers: int = 2, hidden: int = 64, seed: int = 0, tie: bool = True
) -> Path:
    """Write a random-init Llama (GQA, SwiGLU, RMSNorm) + byte tokenizer as an HF directory."""
    from transformers import LlamaConfig, LlamaForCausalLM

    path = Path(path)
    tokenizer = byte_tokenizer()
    heads = max(hidden // 16, 2)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=max(heads // 2, 1),
        max_position_embeddings=2048,
        tie_word_embeddings=tie,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path
