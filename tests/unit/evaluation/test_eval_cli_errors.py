"""Bad ``nemo-rence eval`` input exits with code 2 and names the flag, before any model loads."""

from __future__ import annotations

import json

import pytest

from nemo_rence import cli
from nemo_rence.evaluation import model_source


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory):
    from nemo_rence.tiny import write_tiny_hf_dir

    return write_tiny_hf_dir(tmp_path_factory.mktemp("hf") / "tiny", layers=1, hidden=32)


@pytest.fixture
def bench(tmp_path):
    path = tmp_path / "toy.jsonl"
    path.write_text(json.dumps({"id": "a", "problem": "1+1", "answer": "2"}) + "\n")
    return str(path)


@pytest.fixture(autouse=True)
def no_model(monkeypatch):
    def fail(*args, **kwargs):
        raise AssertionError("a model was loaded despite bad input")

    monkeypatch.setattr(model_source, "materialize_hf_dir", fail)


def _eval(capsys, *args: str) -> tuple[int, str]:
    rc = cli.main(["eval", *args])
    return rc, capsys.readouterr().err


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--k", "0"], "--k must be an integer >= 1, got 0"),
        (["--temperature", "-1"], "--temperature must be a finite number >= 0"),
        (["--temperature", "nan"], "--temperature must be a finite number >= 0"),
        (["--top-p", "1.5"], "--top-p must be in (0, 1]"),
        (["--template", "nope"], "--template: template must be one of"),
        (["--select", "best"], "--select applies to a run directory, not an HF directory"),
    ],
)
def test_bad_settings_exit_2_naming_the_flag(capsys, tmp_path, hf_dir, bench, extra, message):
    rc, err = _eval(capsys, "--checkpoint", str(hf_dir), "--benchmarks", bench,
                    "--out", str(tmp_path / "o"), *extra)  # fmt: skip
    assert rc == 2
    assert message in err
    assert not (tmp_path / "o").exists()


def test_bad_benchmark_files_exit_2(capsys, tmp_path, hf_dir, bench):
    out = str(tmp_path / "o")
    rc, err = _eval(capsys, "--checkpoint", str(hf_dir), "--benchmarks", "nope.jsonl", "--out", out)
    assert rc == 2 and "--benchmarks 'nope.jsonl': no such file" in err
    csv = tmp_path / "b.csv"
    csv.write_text("x\n")
    rc, err = _eval(capsys, "--checkpoint", str(hf_dir), "--benchmarks", str(csv), "--out", out)
    assert (
        rc == 2 and "unknown benchmark file format '.csv'; allowed: .jsonl, .json, .parquet" in err
    )
    rc, err = _eval(capsys, "--checkpoint", str(hf_dir), "--benchmarks", bench, bench, "--out", out)
    assert rc == 2 and "--benchmarks: names must be unique" in err


def test_bad_checkpoints_exit_2(capsys, tmp_path, bench):
    out = str(tmp_path / "o")
    rc, err = _eval(capsys, "--checkpoint", str(tmp_path / "missing"), "--benchmarks", bench,
                    "--out", out)  # fmt: skip
    assert rc == 2 and "--checkpoint: no such file or directory" in err
    empty = tmp_path / "empty"
    empty.mkdir()
    rc, err = _eval(capsys, "--checkpoint", str(empty), "--benchmarks", bench, "--out", out)
    assert rc == 2 and "not a run directory, run checkpoint" in err
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    rc, err = _eval(capsys, "--checkpoint", str(run), "--select", "best", "--benchmarks", bench,
                    "--out", out)  # fmt: skip
    assert rc == 2 and "--select best:" in err and "no best checkpoint" in err
    rc, err = _eval(capsys, "--checkpoint", str(run), "--benchmarks", bench, "--out", out)
    assert rc == 2 and "no 'latest' pointer" in err


def test_bad_compare_file_exits_2(capsys, tmp_path, hf_dir, bench):
    other = tmp_path / "results.json"
    other.write_text(json.dumps({"label": "x", "benchmarks": {}}))
    rc, err = _eval(capsys, "--checkpoint", str(hf_dir), "--benchmarks", bench,
                    "--out", str(tmp_path / "o"), "--compare", str(other))  # fmt: skip
    assert rc == 2 and "has no score for ['toy']" in err


def test_argparse_rejects_an_unknown_engine_with_exit_2(capsys, tmp_path, hf_dir, bench):
    with pytest.raises(SystemExit) as exc:
        cli.main(["eval", "--checkpoint", str(hf_dir), "--benchmarks", bench,
                  "--out", str(tmp_path), "--engine", "onnx"])  # fmt: skip
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "--engine" in err and "'hf', 'vllm', 'trtllm'" in err
