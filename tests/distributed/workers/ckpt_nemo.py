"""Worker (1 process): NeMo-layout export/import through the ``convert`` CLI, and the errors
for truncated / mis-shaped checkpoints.

Usage:
  ckpt_nemo.py interop WORK_DIR           all offline checks below, in WORK_DIR
  ckpt_nemo.py export CKPT OUT FAMILY     megatron-to-hf of CKPT; compare with the tiny FAMILY model
"""

from __future__ import annotations

import argparse
import contextlib
import io
import shutil
import sys
from pathlib import Path

import torch

from tests.distributed.workers.ckpt_common import (
    emit,
    megatron_logits,
    setup_megatron,
    teardown_megatron,
    tiny_hf_model,
    tokens,
)


def convert(*argv: str) -> tuple[int, str]:
    """Run ``nemo-rence convert ARGV`` in process; return (exit code, printed output)."""
    from nemo_rence.checkpoint import cli

    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        rc = cli.run(parser.parse_args(list(argv)))
    return rc, buf.getvalue()


def bit_exact(hf_dir: Path, family: str) -> bool:
    from nemo_rence.checkpoint.hf import load_hf_state_dict

    model = tiny_hf_model(family)
    ref = {
        k: v for k, v in model.state_dict().items()
        if not (model.config.tie_word_embeddings and k == "lm_head.weight")
    }  # fmt: skip
    got = load_hf_state_dict(hf_dir)
    return got.keys() == ref.keys() and all(torch.equal(got[k], ref[k]) for k in ref)


def error_of(fn, *args, **kwargs) -> str | None:
    from nemo_rence.checkpoint.mapping import CheckpointError

    try:
        fn(*args, **kwargs)
    except CheckpointError as e:
        return str(e)
    return None


def interop(work: Path) -> None:
    from nemo_rence.checkpoint import dist
    from nemo_rence.checkpoint.hf import read_hf_config
    from nemo_rence.checkpoint.nemo import import_nemo

    for family, suffix in (("qwen3_tied", ""), ("llama3_rope", ""), ("qwen2", ".nemo")):
        src = work / f"{family}_hf"
        tiny_hf_model(family).save_pretrained(src)
        nemo = work / f"{family}_nemo{suffix}"
        rc1, out1 = convert("hf-to-nemo", "--hf-dir", str(src), "--out", str(nemo))
        back = work / f"{family}_back"
        rc2, out2 = convert("nemo-to-hf", "--nemo", str(nemo), "--out", str(back))
        emit(
            {
                "check": "roundtrip", "family": family, "layout": suffix or "nemo2",
                "rc": [rc1, rc2], "summary": out1 + out2, "bit_exact": bit_exact(back, family),
                "config_equal": read_hf_config(back)["model_type"] == read_hf_config(src)["model_type"],
            }
        )  # fmt: skip

    # A NeMo 2 checkpoint without our metadata: the architecture comes from context/model.yaml.
    plain = work / "nemo_only"
    shutil.copytree(work / "llama3_rope_nemo", plain)
    (plain / "context" / "nemo_rence.json").unlink()
    import_nemo(plain, work / "nemo_only_back")
    emit(
        {"check": "nemo_yaml_only", "bit_exact": bit_exact(work / "nemo_only_back", "llama3_rope")}
    )

    # Truncated tensor data.
    cut = work / "truncated"
    shutil.copytree(work / "qwen3_tied_nemo", cut)
    biggest = max((cut / "weights").glob("*.distcp"), key=lambda p: p.stat().st_size)
    biggest.write_bytes(biggest.read_bytes()[: biggest.stat().st_size // 2])
    emit({"check": "truncated", "error": error_of(import_nemo, cut, work / "cut_back")})
    rc, out = convert("nemo-to-hf", "--nemo", str(cut), "--out", str(work / "cut_cli"))
    emit({"check": "truncated_cli", "rc": rc, "out": out, "exists": (work / "cut_cli").exists()})

    # A truncated .nemo archive.
    arc = work / "cut.nemo"
    data = (work / "qwen2_nemo.nemo").read_bytes()
    arc.write_bytes(data[: len(data) // 3])
    emit({"check": "truncated_archive", "error": error_of(import_nemo, arc, work / "arc_back")})

    # A config that does not match the stored shapes.
    wrong = dict(read_hf_config(work / "qwen3_tied_hf"), intermediate_size=96)
    emit(
        {
            "check": "wrong_shape",
            "error": error_of(import_nemo, work / "qwen3_tied_nemo", work / "w", hf_config=wrong),
        }
    )

    # The offline hf-to-megatron checkpoint loads into a megatron model (and a mismatched model
    # is refused naming the tensor).
    ckpt = work / "qwen2_megatron"
    rc, _ = convert("hf-to-megatron", "--hf-dir", str(work / "qwen2_hf"), "--out", str(ckpt))
    setup_megatron(1, 1)
    import dataclasses

    from nemo_rence.policy.megatron.model import build_gpt_model

    arch = dist.read_arch(ckpt)
    model = build_gpt_model(arch, pre_process=True, post_process=True, spec="local")
    dist.load_checkpoint(model, ckpt)
    hf = tiny_hf_model("qwen2")
    ids = tokens()
    with torch.no_grad():
        ref = hf(ids).logits.float()
    diff = (megatron_logits(model, ids, arch.vocab_size) - ref).abs().max().item()
    emit({"check": "offline_ckpt_logits", "rc": rc, "max_abs_diff": diff})
    other = build_gpt_model(
        dataclasses.replace(arch, ffn_hidden_size=96), pre_process=True, post_process=True
    )
    emit({"check": "model_mismatch", "error": error_of(dist.load_checkpoint, other, ckpt)})
    teardown_megatron()


def export(ckpt: str, out: str, family: str) -> None:
    rc, text = convert("megatron-to-hf", "--ckpt", ckpt, "--out", out)
    emit({"check": "export", "rc": rc, "out": text, "bit_exact": bit_exact(Path(out), family)})


if __name__ == "__main__":
    if sys.argv[1] == "interop":
        interop(Path(sys.argv[2]))
    else:
        export(sys.argv[2], sys.argv[3], sys.argv[4])
