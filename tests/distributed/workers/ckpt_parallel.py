"""Worker (torchrun, 1 or 2 processes): load a tiny HF model into a TP/PP-parallel megatron
model via ``checkpoint.hf`` (tp_shard + PP layer offsets), compare logits with HF, export it
back (TP gather), save a distributed checkpoint, and load checkpoints written at other layouts.

Usage: ckpt_parallel.py FAMILY TP PP SAVE_DIR [LOAD_DIR ...]
Each rank prints CKPT_RESULT lines (see ckpt_common.emit).
"""

from __future__ import annotations

import sys

import torch

from tests.distributed.workers.ckpt_common import (
    emit,
    pipeline_logits,
    setup_megatron,
    teardown_megatron,
    tiny_hf_model,
    tokens,
)


def _hf_reference(hf: torch.nn.Module, arch) -> dict[str, torch.Tensor]:
    return {
        k: v for k, v in hf.state_dict().items()
        if not (arch.tie_word_embeddings and k == "lm_head.weight")
    }  # fmt: skip


def _check(model, hf, arch, what: str) -> None:
    """Emit logit diff (last stage) and whether this stage's export is bit-exact."""
    import torch.distributed as dist
    from megatron.core import parallel_state

    from nemo_rence.checkpoint.hf import model_to_hf_tensors
    from nemo_rence.checkpoint.mapping import pp_layer_offset, stage_layer_range

    ids = tokens()
    logits = pipeline_logits(model, ids, arch.vocab_size)
    ref_sd = _hf_reference(hf, arch)
    exported = dict(model_to_hf_tensors(model, arch))
    result = {
        "what": what,
        "rank": dist.get_rank(),
        "pp_rank": parallel_state.get_pipeline_model_parallel_rank(),
        "exported": len(exported),
        "layers": list(stage_layer_range(model)),
        "megatron_offset": pp_layer_offset(model.config),
        "bit_exact": bool(exported)
        and all(k in ref_sd and torch.equal(v, ref_sd[k]) for k, v in exported.items()),
    }
    if logits is not None:
        with torch.no_grad():
            ref = hf(ids).logits.float()
        result["max_abs_diff"] = (logits - ref).abs().max().item()
    emit(result)


def main(family: str, tp: int, pp: int, save_dir: str, load_dirs: list[str]) -> None:
    from megatron.core import parallel_state

    from nemo_rence.arch import ArchSpec
    from nemo_rence.checkpoint.dist import load_checkpoint, save_checkpoint
    from nemo_rence.checkpoint.hf import load_hf_into_model
    from nemo_rence.checkpoint.mapping import CheckpointError
    from nemo_rence.policy.megatron.model import build_gpt_model

    setup_megatron(tp, pp)
    hf = tiny_hf_model(family)
    arch = ArchSpec.from_hf_config(hf.config)

    def build():
        return build_gpt_model(
            arch,
            pre_process=parallel_state.is_pipeline_first_stage(),
            post_process=parallel_state.is_pipeline_last_stage(),
            spec="local",
        )

    if save_dir != "-":
        model = build()
        # From a safetensors directory: each pipeline stage reads only its own tensors.
        hf_dir = f"{save_dir}_hf"
        if torch.distributed.get_rank() == 0:
            hf.save_pretrained(hf_dir)
        torch.distributed.barrier()
        load_hf_into_model(model, hf_dir, arch)
        _check(model, hf, arch, "from_hf")
        # A plain (per-rank) AdamW state rides along and comes back at the same layout.
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
        for p in model.parameters():
            p.grad = torch.ones_like(p)
        opt.step()
        opt.zero_grad()
        load_hf_into_model(model, hf.state_dict(), arch)  # undo the step on the weights
        save_checkpoint(model, save_dir, arch, optimizer_state=opt.state_dict())
        fresh = build()
        restored = load_checkpoint(fresh, save_dir)
        assert restored is not None
        emit(
            {
                "what": "optimizer_roundtrip",
                "equal": all(
                    torch.equal(a["exp_avg"], b["exp_avg"])
                    for a, b in zip(
                        opt.state_dict()["state"].values(),
                        restored["state"].values(),
                        strict=True,
                    )
                ),
            }
        )
    for load_dir in load_dirs:
        model = build()
        with torch.no_grad():
            for p in model.parameters():
                p.zero_()
        try:  # the per-rank optimizer state of another layout is refused, clearly
            load_checkpoint(model, load_dir)
            emit({"what": f"optimizer:{load_dir}", "error": None})
        except CheckpointError as e:
            emit({"what": f"optimizer:{load_dir}", "error": str(e)})
        load_checkpoint(model, load_dir, load_optimizer=False)
        _check(model, hf, arch, f"load:{load_dir}")
    teardown_megatron()


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5:])
