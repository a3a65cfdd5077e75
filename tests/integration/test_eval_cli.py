"""The real entry point, ``nemo-rence eval``, on tiny models: an HF directory and a run's
checkpoints (latest and best), checked against an independent computation from the samples file
and against the trainer's own greedy held-out responses.

The HF model is a tiny random Llama fine-tuned in a few seconds to answer every prompt with
``\\boxed{7}`` or ``\\boxed{8}`` at even odds: sampled answers are coin flips, so avg@k and the
per-problem std are non-trivial.
"""

from __future__ import annotations

import json
import os
import re
import statistics
import subprocess
import sys
from pathlib import Path

import pytest


def _coin_model(path: Path) -> Path:
    """A tiny Llama + byte tokenizer answering ``\\boxed{7}`` or ``\\boxed{8}`` (p = 1/2 each)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from nemo_rence.tiny import write_tiny_hf_dir

    write_tiny_hf_dir(path, layers=1, hidden=32)
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path)
    pairs = [
        (tok(p)["input_ids"], tok("\\boxed{" + a + "}")["input_ids"] + [tok.eos_token_id])
        for p in ("1+1", "2+3", "4*2", "9-4")
        for a in ("7", "8")
    ]
    width = max(len(p) + len(r) for p, r in pairs)
    ids = torch.full((len(pairs), width), tok.pad_token_id)
    labels = torch.full((len(pairs), width), -100)
    mask = torch.zeros((len(pairs), width), dtype=torch.long)
    for i, (p, r) in enumerate(pairs):
        ids[i, : len(p) + len(r)] = torch.tensor(p + r)
        labels[i, len(p) : len(p) + len(r)] = torch.tensor(r)
        mask[i, : len(p) + len(r)] = 1
    torch.manual_seed(0)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    model.train()
    for _ in range(150):
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.save_pretrained(path)
    return path


def _env() -> dict[str, str]:
    return dict(os.environ, OMP_NUM_THREADS="1", OMP_WAIT_POLICY="PASSIVE")


def _cli(*args: str) -> str:
    proc = subprocess.run(
        [sys.executable, "-m", "nemo_rence", *args],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    return proc.stdout


def _jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def _read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def coin(tmp_path_factory) -> Path:
    return _coin_model(tmp_path_factory.mktemp("coin") / "hf")


def _last_boxed(text: str) -> str | None:
    found = re.findall(r"\\boxed\{([^{}]*)\}", text)
    return found[-1] if found else None


def test_eval_of_an_hf_dir_matches_a_recomputation_from_the_samples(coin, tmp_path):
    bench = _jsonl(
        tmp_path / "toy.jsonl",
        [
            {"id": "p1", "problem": "1+1", "answer": "7"},
            {"id": "p2", "problem": "2+3", "answer": "8"},
            {"id": "p3", "problem": "4*2", "answer": "9"},  # never answered
            {"id": "p4", "problem": "9-4", "answer": "7"},
            {"id": "bad", "problem": "", "answer": "1"},  # counted, not fatal
            "{broken",
        ],
    )
    out = tmp_path / "eval"
    stdout = _cli("eval", "--checkpoint", str(coin), "--benchmarks", f"toy={bench}", "--k", "8",
                  "--template", "plain", "--no-chat", "--max-new-tokens", "16", "--seed", "3",
                  "--out", str(out))  # fmt: skip
    doc = json.loads((out / "results.json").read_text())
    assert doc["checkpoint"]["kind"] == "hf" and doc["label"] == "hf"
    s = doc["settings"]
    assert (s["k"], s["temperature"], s["top_p"], s["engine"], s["chat"]) == (
        8,
        0.7,
        1.0,
        "hf",
        False,
    )
    toy = doc["benchmarks"]["toy"]
    assert (toy["num_problems"], toy["rows"]) == (4, 6)
    assert toy["skipped"] == {"malformed": 1, "no_problem": 1}
    assert toy["ids"] == ["p1", "p2", "p3", "p4"] and set(toy["pass_at_k"]) == {"1", "2", "4", "8"}

    # Independent computation: grade each sample by its last \boxed{}, rebuild avg@8 and the std.
    samples = _read_jsonl(out / "samples.jsonl")
    assert len(samples) == 4 * 8
    by_problem: dict[str, list[int]] = {}
    for row in sorted(samples, key=lambda r: (r["id"], r["sample"])):
        ok = _last_boxed(row["response"]) == row["answer"]
        assert row["correct"] == ok, row
        by_problem.setdefault(row["id"], []).append(int(ok))
    matrix = [by_problem[i] for i in toy["ids"]]
    assert toy["correct"] == matrix
    avg = sum(map(sum, matrix)) / 32
    std = sum(statistics.pstdev(r) for r in matrix) / 4
    assert 0 < avg < 1 and std > 0 and sum(by_problem["p3"]) == 0  # coin flips, not constant
    assert toy["avg_at_k"] == pytest.approx(avg) and toy["std"] == pytest.approx(std)
    assert doc["average"] == {"avg_at_k": pytest.approx(avg), "std": pytest.approx(std)}
    cell = f"{100 * avg:.1f} ({100 * std:.1f})"
    md = (out / "results.md").read_text()
    assert f"| Method | toy | Avg |\n|---|---|---|\n| hf | {cell} | {cell} |\n" in md
    assert cell in stdout


# ---------------------------------------------------------------------------------- run dir

TRAIN = [
    "data.task=jsonl",
    "data.heldout_fraction=0.4",  # a hash split: 16 problems, some of them held out
    "data.template=plain",
    "data.chat_template=false",
    "filter.enabled=false",
    "filter.batch_size=2",
    "optim.mini_batch_size=1",
    "optim.n_update=2",
    "optim.lr=1e-2",  # large: the greedy answers change every iteration
    "rollout.group_size=4",
    "rollout.max_new_tokens=12",
    "data.max_prompt_tokens=64",
    "run.eval_size=6",
    "run.iterations=4",
    "run.eval_every=1",
    "run.keep_checkpoints=1",
]


@pytest.fixture(scope="module")
def run_dir(coin, tmp_path_factory) -> Path:
    base = tmp_path_factory.mktemp("run")
    data = _jsonl(
        base / "train.jsonl",
        [{"id": f"t{i}", "problem": f"{i % 9 + 1}+{i % 7 + 1}", "answer": str(7 + i % 2)}
         for i in range(16)],
    )  # fmt: skip
    out = base / "run"
    _cli("train", "model=hf", f"model.hf_dir={coin}", f"data.path={data}", *TRAIN,
         f"run.out_dir={out}", "--no-progress")  # fmt: skip
    return out


def _expected_best(run_dir: Path) -> int:
    """Highest periodic/final held-out accuracy; a tie keeps the earlier iteration."""
    best_it, best_value = None, None
    for row in _read_jsonl(run_dir / "metrics.jsonl"):
        candidate = "eval/accuracy" in row and not row.get("eval/is_before")
        if candidate and (best_value is None or row["eval/accuracy"] > best_value):
            best_it, best_value = row["iteration"], row["eval/accuracy"]
    assert best_it is not None
    return best_it


def test_training_records_the_best_checkpoint_and_rotation_keeps_it(run_dir):
    ckpts = run_dir / "checkpoints"
    best = json.loads((ckpts / "best").read_text())
    assert best["iteration"] == _expected_best(run_dir)
    assert best["checkpoint"] == f"iter-{best['iteration']:06d}"
    on_disk = {p.name for p in ckpts.glob("iter-*")}
    assert on_disk == {best["checkpoint"], "iter-000004"}  # keep_checkpoints=1, plus best


def _greedy_eval(run_dir: Path, checkpoint: str, reference: Path, out: Path, *extra: str) -> dict:
    """Greedy k=1 eval on the trainer's held-out prompts; returns results.json."""
    rows = _read_jsonl(reference)
    problems = [{"id": r["id"], "problem": r["problem"], "answer": r["answer"]} for r in rows]
    bench = _jsonl(out.parent / f"{out.name}.jsonl", problems)
    _cli("eval", "--checkpoint", checkpoint, *extra, "--benchmarks", f"heldout={bench}",
         "--k", "1", "--temperature", "0", "--out", str(out))  # fmt: skip
    responses = {r["id"]: r["response"] for r in _read_jsonl(out / "samples.jsonl")}
    # The same weights, prompt template and length limits as the trainer's own evaluation.
    assert responses == {r["id"]: r["response"] for r in rows}
    return json.loads((out / "results.json").read_text())


def test_eval_of_the_best_checkpoint_reproduces_the_trainers_greedy_responses(run_dir, tmp_path):
    it = _expected_best(run_dir)
    reference = run_dir / "samples" / f"eval-iter{it:06d}-periodic.jsonl"
    assert reference.is_file(), "the trainer writes its held-out responses to samples/"
    doc = _greedy_eval(run_dir, str(run_dir), reference, tmp_path / "best", "--select", "best")
    sel = doc["checkpoint"]["selection"]
    assert doc["checkpoint"]["iteration"] == it and doc["label"] == f"run iter-{it:06d}"
    assert (sel["select"], sel["source"], sel["iteration"]) == ("best", "pointer", it)
    assert doc["settings"]["template"] == "plain" and doc["settings"]["chat"] is False
    assert doc["settings"]["max_new_tokens"] == 12  # from the run's config.json


def test_eval_of_an_explicit_checkpoint_dir_uses_its_weights(run_dir, tmp_path):
    reference = run_dir / "samples" / "eval-iter000004-after.jsonl"
    before = {
        r["response"] for r in _read_jsonl(run_dir / "samples" / "eval-iter000000-before.jsonl")
    }
    assert {r["response"] for r in _read_jsonl(reference)} != before  # training changed them
    ckpt = run_dir / "checkpoints" / "iter-000004"
    doc = _greedy_eval(run_dir, str(ckpt), reference, tmp_path / "latest")
    assert doc["checkpoint"]["kind"] == "run" and doc["checkpoint"]["iteration"] == 4
