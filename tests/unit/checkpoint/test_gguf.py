"""GGUF import: the shipped SmolLM2-135M-Instruct becomes a cached HF dir that our megatron
model runs exactly as transformers' own GGUF load does."""

from __future__ import annotations

from pathlib import Path

import pytest

from nemo_rence.checkpoint import gguf
from tests.distributed.workers.ckpt_common import parse
from tests.helpers import torchrun

WORKER = Path(__file__).resolve().parents[2] / "distributed" / "workers" / "ckpt_gguf.py"


def test_shipped_smollm2_gguf_is_found_in_its_package():
    path = gguf.default_gguf_path()
    assert path.name == gguf.SMOLLM2_GGUF and path.stat().st_size > 50_000_000


def test_conversion_is_cached_under_nemo_rence_cache_and_done_once(tmp_path, monkeypatch):
    calls = []

    def fake_convert(src, out, *, progress=False):
        calls.append(src)
        Path(out).mkdir(parents=True)
        (Path(out) / "config.json").write_text("{}")

    monkeypatch.setenv("NEMO_RENCE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(gguf, "gguf_to_hf", fake_convert)
    first = gguf.smollm2_hf_dir()
    second = gguf.smollm2_hf_dir()
    assert first == second and first.is_relative_to(tmp_path / "cache")
    assert len(calls) == 1 and (first / "config.json").is_file()
    assert [p.name for p in first.parent.iterdir()] == [first.name]  # no staging dirs left
    gguf.smollm2_hf_dir(refresh=True)
    assert len(calls) == 2


def test_failed_conversion_leaves_no_cache_entry(tmp_path, monkeypatch):
    def broken(src, out, *, progress=False):
        Path(out).mkdir(parents=True)
        raise RuntimeError("disk full")

    monkeypatch.setenv("NEMO_RENCE_CACHE", str(tmp_path))
    monkeypatch.setattr(gguf, "gguf_to_hf", broken)
    with pytest.raises(RuntimeError, match="disk full"):
        gguf.smollm2_hf_dir()
    assert list((tmp_path / "hf").iterdir()) == []


@pytest.mark.slow
def test_smollm2_from_gguf_greedy_continuation_equals_transformers_gguf_load(tmp_path):
    (r,) = parse(torchrun(WORKER, str(tmp_path / "smollm2"), nproc=1))
    assert r["tied"] and r["vocab_size"] == 49152
    assert r["ours"] == r["ref"][: len(r["ours"])] and len(r["ref"]) >= 8
    assert r["max_abs_diff"] <= 1e-3
