"""Worker (1 process): SmolLM2-135M-Instruct from the shipped GGUF -> HF dir (our writer) ->
our megatron model (our loader); greedy continuation equals transformers' own GGUF model's."""

from __future__ import annotations

import sys

import torch

from tests.distributed.workers.ckpt_common import (
    emit,
    megatron_logits,
    setup_megatron,
    teardown_megatron,
)

PROMPT = "The three primary colors are"
NEW_TOKENS = 16


def main(out_dir: str) -> None:
    from nemo_rence.arch import ArchSpec
    from nemo_rence.checkpoint.gguf import default_gguf_path, load_gguf, write_hf_dir
    from nemo_rence.checkpoint.hf import load_hf_into_model, read_hf_config
    from nemo_rence.policy.megatron.model import build_gpt_model

    setup_megatron(1, 1)
    ref_model, tokenizer = load_gguf(default_gguf_path())
    summary = write_hf_dir(ref_model, tokenizer, out_dir)

    arch = ArchSpec.from_hf_config(read_hf_config(out_dir))
    model = build_gpt_model(arch, pre_process=True, post_process=True, spec="local")
    load_hf_into_model(model, out_dir, arch)

    prompt = tokenizer(PROMPT, return_tensors="pt").input_ids
    with torch.no_grad():
        ref = ref_model.generate(
            prompt, max_new_tokens=NEW_TOKENS, do_sample=False,
            pad_token_id=tokenizer.eos_token_id,
        )[0, prompt.shape[1]:]  # fmt: skip
        ref_logits = ref_model(prompt).logits.float()
    ours_logits = megatron_logits(model, prompt, arch.vocab_size)
    ids = prompt
    for _ in range(NEW_TOKENS):
        nxt = megatron_logits(model, ids, arch.vocab_size)[:, -1].argmax(-1, keepdim=True)
        ids = torch.cat([ids, nxt], dim=1)
    ours = ids[0, prompt.shape[1] :]
    emit(
        {
            "ref": ref.tolist(),
            "ours": ours.tolist(),
            "text": tokenizer.decode(ours),
            "max_abs_diff": (ours_logits - ref_logits).abs().max().item(),
            "tensors": summary["tensors"],
            "vocab_size": arch.vocab_size,
            "tied": arch.tie_word_embeddings,
        }
    )
    teardown_megatron()


if __name__ == "__main__":
    main(sys.argv[1])
