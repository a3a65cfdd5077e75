"""Ctrl-C is a checkpointed stop (exit 130, one line; a second one aborts), and every bad input
is refused with exit status 2, naming the field and the allowed values, before anything is built."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from nemo_rence import cli
from nemo_rence.config import ConfigError, compose
from nemo_rence.infra.distributed import check_world_size
from tests.helpers import REPO

FLAG = """
import sys, time
from nemo_rence.signals import StopFlag
stop = StopFlag.install()
print("ready", flush=True)
deadline = time.monotonic() + 60
while stop.signal is None and time.monotonic() < deadline:
    time.sleep(0.01)
time.sleep(float(sys.argv[1]))  # "the rest of the iteration and its checkpoint"
print("stopped by", stop.describe(), flush=True)
sys.exit(stop.exit_code)
"""


def _flag_process(rest_s: float) -> subprocess.Popen:
    proc = subprocess.Popen(
        [sys.executable, "-c", FLAG, str(rest_s)],
        env=dict(os.environ, PYTHONPATH=str(REPO)),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    return proc


def test_ctrl_c_finishes_the_step_and_exits_130_with_one_line():
    proc = _flag_process(0.5)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 130 and "stopped by SIGINT" in out
    assert err.strip().splitlines() == [
        "interrupted: finishing the current step, then checkpointing and exiting "
        "(Ctrl-C again to abort now)"
    ]


def test_a_second_ctrl_c_aborts_at_once():
    proc = _flag_process(30.0)
    proc.send_signal(signal.SIGINT)
    time.sleep(0.3)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=10)  # long before the 30 s step would end
    assert proc.returncode == 130 and "stopped by" not in out
    assert "interrupted again: aborting now" in err


def test_sigterm_stays_a_clean_preemption_exit():
    proc = _flag_process(0.1)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0 and "stopped by SIGTERM" in out


@pytest.mark.parametrize(
    "override, field",
    [
        ("optim.lr=.nan", "optim.lr"),
        ("optim.lr=1e999", "optim.lr"),
        ("rollout.temperature=.inf", "rollout.temperature"),
        ("kl.init=.nan", "kl.init"),
        ("kl.target=-.inf", "kl.target"),
        ("rollout.truncated_reward=.nan", "rollout.truncated_reward"),
    ],
)
def test_nan_and_inf_are_refused_naming_the_field(override, field):
    with pytest.raises(ConfigError, match=rf"{field} must be a finite number, got (nan|inf|-inf)"):
        compose([override])


def test_run_resume_names_its_allowed_values():
    with pytest.raises(ConfigError, match=r"run.resume must be one of \['auto', 'must', 'never'\]"):
        compose(["run.resume=sometimes"])


def test_a_parallel_layout_larger_than_the_world_is_refused():
    cfg = compose(["model=tiny", "policy.tensor_parallel=4"])
    check_world_size(cfg, 8)
    with pytest.raises(ConfigError, match=r"policy.tensor_parallel=4 .* world size 2 .* \[1, 2\]"):
        check_world_size(cfg, 2)


@pytest.fixture
def handlers():
    """cli.main('train') installs the stop flag's handlers in this process: restore them."""
    saved = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1)}
    yield
    for s, h in saved.items():
        signal.signal(s, h)


def test_overrides_after_flags_are_accepted_and_bad_values_refused_before_building(
    handlers, tmp_path, capsys
):
    out = tmp_path / "run"
    code = cli.main(["train", "model=tiny", "--no-progress", f"run.out_dir={out}", "kl.init=.nan"])
    assert code == 2
    assert "kl.init must be a finite number, got nan" in capsys.readouterr().err
    assert not out.exists()


def test_tensor_parallel_larger_than_the_world_exits_2_before_building(handlers, tmp_path, capsys):
    out = tmp_path / "run"
    code = cli.main(["train", "model=tiny", "policy.tensor_parallel=2", f"run.out_dir={out}"])
    assert code == 2 and "does not divide the world size 1" in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.parametrize(
    "argv, message",
    [
        (["plan", "Qwen3-8B", "--gpus", "0"], "argument --gpus: must be an integer >= 1, got 0"),
        (["plan", "Qwen3-8B", "--gpus", "-8"], "argument --gpus: must be an integer >= 1, got -8"),
        (["plan", "Qwen3-8B", "--gpu-mem", "nan"], "argument --gpu-mem: must be a finite number"),
        (["grade", "x.jsonl", "--workers", "0"], "argument --workers: must be an integer >= 1"),
        (["grade", "x.jsonl", "--timeout", "0"], "argument --timeout: must be a finite number"),
    ],
)
def test_bad_cli_numbers_exit_2_naming_the_flag(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(argv)
    assert exit_.value.code == 2 and message in capsys.readouterr().err


def test_plan_refuses_a_bad_override_with_exit_2(capsys):
    assert cli.main(["plan", "Qwen3-8B", "rollout.group_size=1", "--gpus", "8"]) == 2
    assert "rollout.group_size must be >= 2" in capsys.readouterr().err


def test_grade_checks_its_output_path_before_grading(tmp_path, capsys, monkeypatch):
    from nemo_rence.rewards import cli as grade_cli

    def no_grading(*args, **kwargs):
        raise AssertionError("graded before checking --output")

    monkeypatch.setattr(grade_cli, "GraderPool", no_grading)
    rows = tmp_path / "in.jsonl"
    rows.write_text(json.dumps({"response": r"\boxed{4}", "answer": "4"}) + "\n")
    for bad, why in (
        (tmp_path / "missing" / "out.jsonl", "does not exist"),
        (tmp_path, "directory"),
    ):
        assert cli.main(["grade", str(rows), "--output", str(bad)]) == 2
        assert f"cannot write --output {bad}" in (err := capsys.readouterr().err) and why in err
