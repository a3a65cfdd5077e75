"""Helpers for tests: run a worker script under torchrun (2 processes, gloo on CPU)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def torchrun(script: str | Path, *args: str, nproc: int = 2, timeout: float = 600) -> str:
    """Run ``script`` with ``torchrun --nproc_per_node nproc`` and return its combined output.

    Fails the calling test with the full output when any rank exits non-zero or the run takes
    longer than ``timeout`` seconds.
    """
    env = dict(os.environ, OMP_NUM_THREADS="1", OMP_WAIT_POLICY="PASSIVE", PYTHONPATH=str(REPO))
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        f"--nproc_per_node={nproc}",
        "--master_addr=127.0.0.1",
        f"--master_port={free_port()}",
        str(script),
        *args,
    ]
    proc = subprocess.run(
        cmd, env=env, capture_output=True, text=True, timeout=timeout, cwd=REPO, check=False
    )
    out = proc.stdout + proc.stderr
    if proc.returncode != 0:
        raise AssertionError(
            f"torchrun {script} failed with exit {proc.returncode}:\n{out[-8000:]}"
        )
    return out


def tiny_llama(
    seed: int = 0,
    *,
    vocab: int = 96,
    hidden: int = 32,
    heads: int = 4,
    kv_heads: int = 2,
    layers: int = 2,
    tie: bool = True,
    eos: int = 3,
):
    """A random-init transformers Llama (GQA, SwiGLU) in eval mode, deterministic in ``seed``."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(
        vocab_size=vocab,
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        max_position_embeddings=256,
        tie_word_embeddings=tie,
        eos_token_id=eos,
        pad_token_id=0,
        bos_token_id=1,
    )
    return LlamaForCausalLM(cfg).eval()


def sequence_logprobs(model, rollouts, prompts, temperature: float = 1.0):
    """[N, T] log softmax(logits / T) of each rollout's tokens under ``model`` (right-padded),
    recomputed with one full forward per rollout, and the [N, T] response mask."""
    import torch

    n, width = len(rollouts), max(max(rollouts.lengths), 1)
    device = next(model.parameters()).device
    lp, mask = torch.zeros(n, width), torch.zeros(n, width)
    with torch.no_grad():
        for i, (p, toks) in enumerate(zip(rollouts.prompt_index, rollouts.token_ids, strict=True)):
            if not toks:
                continue
            ids = torch.tensor([list(prompts[p]) + list(toks)], device=device)
            logits = model(ids).logits[0, len(prompts[p]) - 1 : -1].float() / temperature
            picked = torch.log_softmax(logits, -1).gather(
                -1, torch.tensor(toks, device=device)[:, None]
            )
            lp[i, : len(toks)] = picked[:, 0].cpu()
            mask[i, : len(toks)] = 1
    return lp, mask


def descendants(pid: int) -> list[int]:
    """Every live process below ``pid`` (children, grandchildren ...), read from /proc."""
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents[int(stat.parent.name)] = int(fields[1])
    found, frontier = [], [pid]
    while frontier:
        p = frontier.pop()
        children = [c for c, pp in parents.items() if pp == p]
        found += children
        frontier += children
    return found


def alive(pids: list[int]) -> list[int]:
    """The processes of ``pids`` that still exist and are not zombies."""
    out = []
    for p in pids:
        try:
            state = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z":
            out.append(p)
    return out
