"""Worker (1 process): for each tiny family config, the megatron model loaded from the HF
weights gives the HF logits, and exporting it back gives the HF tensors bit for bit."""

from __future__ import annotations

import dataclasses
import sys

import torch

from tests.distributed.workers.ckpt_common import (
    emit,
    megatron_logits,
    setup_megatron,
    teardown_megatron,
    tiny_hf_model,
    tokens,
)


def main(families: list[str]) -> None:
    from nemo_rence.arch import ArchSpec
    from nemo_rence.checkpoint.hf import load_hf_into_model, model_to_hf_tensors
    from nemo_rence.policy.megatron.model import build_gpt_model

    setup_megatron(1, 1)
    for family in families:
        hf = tiny_hf_model(family)
        arch = ArchSpec.from_hf_config(hf.config)
        model = build_gpt_model(arch, pre_process=True, post_process=True, spec="local")
        load_hf_into_model(model, hf.state_dict(), arch)
        ids = tokens()
        with torch.no_grad():
            ref = hf(ids).logits.float()
        ours = megatron_logits(model, ids, arch.vocab_size)
        exported = dict(model_to_hf_tensors(model, arch))
        hf_sd = {
            k: v for k, v in hf.state_dict().items()
            if not (arch.tie_word_embeddings and k == "lm_head.weight")
        }  # fmt: skip
        unscaled_diff = None
        if arch.rope_scaling is not None:  # the same weights without llama3 scaling differ
            plain = build_gpt_model(
                dataclasses.replace(arch, rope_scaling=None),
                pre_process=True, post_process=True, spec="local",
            )  # fmt: skip
            load_hf_into_model(plain, hf.state_dict(), arch)
            unscaled_diff = (megatron_logits(plain, ids, arch.vocab_size) - ref).abs().max().item()
        emit(
            {
                "family": family,
                "unscaled_max_abs_diff": unscaled_diff,
                "max_abs_diff": (ours - ref).abs().max().item(),
                "same_names": sorted(exported) == sorted(hf_sd),
                "bit_exact": all(
                    torch.equal(exported[k], hf_sd[k]) for k in hf_sd if k in exported
                ),
            }
        )
    teardown_megatron()


if __name__ == "__main__":
    main(sys.argv[1:])
