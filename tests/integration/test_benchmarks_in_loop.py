"""``eval.benchmarks`` inside training (ReNCE Sec. 4.1): every ``eval.every`` iterations each
benchmark is sampled k times per problem through the code of ``nemo-rence eval``; the metrics are
recomputed here by hand from the written samples, and ``checkpoints/best`` follows ``eval/avg``."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from tests.golden.smoke import command, write_boxing_model

K = 4


def _bench(path: Path, answers: list[str]) -> Path:
    rows = [{"problem": f"Compute {a} + 0.", "answer": a} for a in answers]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    work = tmp_path_factory.mktemp("bench-loop")
    model = write_boxing_model(work / "box")  # boxes a random digit: some samples are right
    a = _bench(work / "digits_a.jsonl", ["4", "7", "1"])
    b = _bench(work / "digits_b.jsonl", ["2", "9"])
    out = work / "run"
    cmd = command(
        out,
        model,
        f"eval.benchmarks={{alpha: {a}, beta: {b}}}",
        f"eval.k={K}",
        "eval.every=1",
        "eval.temperature=1.0",
        "run.eval_every=0",
    )
    env = dict(os.environ, OMP_NUM_THREADS="1", OMP_WAIT_POLICY="PASSIVE")
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    (out / "stdout.txt").write_text(proc.stdout)
    return out


def _evals(run: Path) -> list[dict]:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [r for r in rows if "eval/avg" in r]


def test_each_benchmark_is_evaluated_before_every_iteration_and_after(run):
    evals = _evals(run)
    assert [(r["iteration"], next(k for k in r if k.startswith("eval/is_"))) for r in evals] == [
        (0, "eval/is_before"),
        (1, "eval/is_periodic"),
        (2, "eval/is_periodic"),
        (2, "eval/is_after"),
    ]
    for r in evals:
        for name in ("alpha", "beta"):
            assert {f"eval/{name}/avg@{K}", f"eval/{name}/pass@{K}", f"eval/{name}/std"} <= set(r)


def test_avg_at_k_pass_at_k_and_the_average_recomputed_from_the_samples(run):
    for r in _evals(run):
        tag = next(k for k in r if k.startswith("eval/is_")).removeprefix("eval/is_")
        folder = run / "eval" / f"iter{r['iteration']:06d}-{tag}"
        samples = [json.loads(x) for x in (folder / "samples.jsonl").read_text().splitlines()]
        means = []
        for name, problems in (("alpha", 3), ("beta", 2)):
            rows = [s for s in samples if s["benchmark"] == name]
            assert len(rows) == problems * K
            by_problem: dict[str, list[bool]] = {}
            for s in rows:
                by_problem.setdefault(s["id"], []).append(bool(s["correct"]))
            avg = sum(sum(v) for v in by_problem.values()) / (problems * K)
            passed = sum(any(v) for v in by_problem.values()) / problems
            assert r[f"eval/{name}/avg@{K}"] == pytest.approx(avg)
            assert r[f"eval/{name}/pass@{K}"] == pytest.approx(passed)
            means.append(avg)
        assert r["eval/avg"] == pytest.approx(sum(means) / 2)
        assert (folder / "results.md").is_file() and (folder / "results.json").is_file()
    assert any(r["eval/avg"] > 0 for r in _evals(run))  # the boxing model gets some right


def test_the_best_checkpoint_is_chosen_by_eval_avg(run):
    best = json.loads((run / "checkpoints" / "best").read_text())
    assert best["metric"] == "eval/avg"
    candidates = {}
    for r in _evals(run):
        if r["iteration"] >= 1:
            candidates.setdefault(r["iteration"], r["eval/avg"])  # a tie keeps the first
    top = max(candidates.values())
    assert best["iteration"] == min(i for i, v in candidates.items() if v == top)
    assert best["value"] == pytest.approx(top)
    assert (
        "| Avg |" in (run / "stdout.txt").read_text() or "Avg" in (run / "stdout.txt").read_text()
    )


@pytest.mark.distributed
def test_two_processes_evaluate_the_benchmarks_on_rank_0_without_a_hang(tmp_path):
    """Rank 0 alone reads and evaluates the benchmarks; every rank still takes part in the
    periodic evaluation's collectives (a rank that skipped them deadlocked the run)."""
    import sys

    a = _bench(tmp_path / "digits_a.jsonl", ["4", "7"])
    out = tmp_path / "run"
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
        "-m", "nemo_rence", "train", "model=tiny", f"eval.benchmarks={{alpha: {a}}}",
        "eval.k=2", "eval.every=1", "eval.max_new_tokens=8", "run.eval_every=0",
        "filter.enabled=false", "filter.batch_size=2", "optim.mini_batch_size=2",
        "optim.n_update=1", "rollout.group_size=2", "rollout.max_new_tokens=8",
        "run.iterations=2", f"run.out_dir={out}", "--no-progress",
    ]  # fmt: skip
    env = dict(os.environ, OMP_NUM_THREADS="1", OMP_WAIT_POLICY="PASSIVE")
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    tags = [next(k for k in r if k.startswith("eval/is_")) for r in _evals(out)]
    assert tags == ["eval/is_before", "eval/is_periodic", "eval/is_periodic", "eval/is_after"]
    assert json.loads((out / "checkpoints" / "best").read_text())["metric"] == "eval/avg"
