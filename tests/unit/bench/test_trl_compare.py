"""``bench/trl_compare.py`` without TRL: argument checks, our side's config, the report, skips.

Nothing here runs a model or needs TRL; the benchmark itself is run by hand (it takes minutes).
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]


def _load_bench():
    spec = importlib.util.spec_from_file_location("trl_compare", REPO / "bench" / "trl_compare.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


tc = _load_bench()


def _args(*argv: str):
    return tc.build_parser().parse_args(list(argv))


def _side(iteration_s: float, rss: float, rollouts, cpu: float | None = None) -> dict:
    return {
        "versions": {"torch": "x"},
        "iteration_s": iteration_s,
        "iteration_cpu_s": cpu,
        "peak_rss_gib": rss,
        "rollouts_per_step": rollouts,
    }


def test_defaults_are_the_issue_workload_and_valid():
    args = _args()
    assert (args.prompts, args.k, args.new_tokens, args.threads) == (8, 8, 32, 2)
    assert (args.warmup, args.steps) == (1, 2)
    assert tc.validate_args(args) == []
    # TRL's leanest configuration and the one the issue measured, side by side
    assert [tc.parse_trl_config(c, 8, 64) for c in tc.DEFAULT_TRL] == [(8, True), (64, False)]
    assert tc.parse_trl_config("16:default", 8, 64) == (16, None)
    assert [tc.trl_label(8, True), tc.trl_label(16, None)] == ["8:on", "16:default"]


@pytest.mark.parametrize(
    ("argv", "flag"),
    [
        (["--k", "1"], "--k"),
        (["--steps", "0"], "--steps"),
        (["--warmup", "-1"], "--warmup"),
        (["--lr", "0"], "--lr"),
        (["--trl-config", "7:on"], "--trl-config"),
        (["--trl-config", "8"], "--trl-config"),
        (["--trl-config", "8:maybe"], "--trl-config"),
        (["--temperature", "0"], "--temperature"),
        (["--mini-batch", "9"], "--mini-batch"),
        (["--sides", "ours,vllm"], "--sides"),
        (["--sides", ","], "--sides"),
    ],
)
def test_bad_argument_is_reported_with_its_flag(argv, flag):
    errors = tc.validate_args(_args(*argv))
    assert len(errors) == 1 and errors[0].startswith(flag), errors


def test_invalid_arguments_exit_2_before_any_work(capsys, monkeypatch):
    monkeypatch.setattr(tc, "plan_prompts", lambda *a: pytest.fail("planned despite bad args"))
    assert tc.main(["--k", "1"]) == 2
    assert "--k must be >= 2" in capsys.readouterr().err


def test_trl_python_defaults_to_the_environment_variable(monkeypatch):
    monkeypatch.setenv(tc.TRL_PYTHON_ENV, "/opt/some-venv/bin/python")
    assert _args().trl_python == "/opt/some-venv/bin/python"
    monkeypatch.delenv(tc.TRL_PYTHON_ENV)
    assert _args().trl_python == tc.DEFAULT_TRL_PYTHON


def test_our_overrides_give_exactly_p_times_k_rollouts_per_iteration():
    overrides = tc.ours_overrides(_args("--prompts", "4", "--k", "6", "--new-tokens", "16"))
    assert "filter.enabled=false" in overrides  # every group kept: no extra draws
    from nemo_rence.config import compose

    cfg = compose(overrides)
    assert not cfg.filter.enabled
    assert (cfg.filter.batch_size, cfg.rollout.group_size) == (4, 6)
    assert (cfg.rollout.prompts_per_draw or cfg.filter.batch_size) == 4
    assert cfg.rollout.max_new_tokens == 16
    assert cfg.policy.precision == "fp32" and cfg.loss.name == "rence"
    assert cfg.optim.lr == 1e-6  # the same --lr as the TRL side
    assert cfg.rollout.temperature == 1.0  # the same --temperature as the TRL side


def test_report_has_ratios_and_pass_flags_against_the_targets():
    ours = _side(40.0, 4.0, [64, 64], cpu=70.0)
    trl = _side(120.0, 12.0, 64, cpu=210.0)
    lean = _side(60.0, 4.5, 64)
    report = tc.assemble({"k": 8}, ours, {"64:off": trl, "8:on": lean})
    r = report["ratios"]["64:off"]
    assert r["speedup"] == 3.0 and r["speedup_pass"] is True
    assert r["speedup_cpu_time"] == 3.0
    assert r["rss_ratio"] == pytest.approx(1 / 3, rel=1e-3) and r["rss_ratio_pass"] is True
    assert r["equal_rollouts_per_step"] is True
    # each TRL configuration is judged on its own
    r = report["ratios"]["8:on"]
    assert r["speedup"] == 1.5 and r["speedup_pass"] is True and r["rss_ratio_pass"] is False
    assert report["config"] == {"k": 8}
    assert tc.assemble({"lr": 1e-6}, None, {})["config"]["lr"] == 1e-6  # small values survive
    assert json.loads(json.dumps(report)) == report  # plain JSON


def test_report_fails_a_missed_target():
    report = tc.assemble({}, _side(100.0, 8.0, [72]), {"8:on": _side(120.0, 12.0, 64)})
    assert report["ratios"]["8:on"]["speedup_pass"] is False
    assert report["ratios"]["8:on"]["rss_ratio_pass"] is False
    assert report["ratios"]["8:on"]["equal_rollouts_per_step"] is False


def test_report_without_trl_has_no_ratio_and_no_pass_flag():
    report = tc.assemble({}, _side(40.0, 4.0, [64]), {"8:on": {"skipped": "no trl"}})
    assert report["trl"] == {"8:on": {"skipped": "no trl"}}
    r = report["ratios"]["8:on"]
    assert r["speedup"] is None and r["speedup_pass"] is None and r["rss_ratio_pass"] is None


def test_missing_trl_interpreter_is_skipped_with_how_to_fix(tmp_path):
    ok, reason = tc.check_trl(str(tmp_path / "nope" / "python"))
    assert not ok
    assert "TRL side skipped" in reason and "--trl-python" in reason


def test_interpreter_without_trl_is_skipped_with_the_import_error(tmp_path):
    fake = tmp_path / "python"
    fake.write_text("#!/bin/sh\necho \"ModuleNotFoundError: No module named 'trl'\" >&2\nexit 1\n")
    fake.chmod(0o755)
    ok, reason = tc.check_trl(str(fake))
    assert not ok
    assert "not importable" in reason and "No module named 'trl'" in reason


def test_main_reports_a_skipped_trl_side_in_the_json(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(tc, "plan_prompts", lambda *a: {"hf_dir": "/m", "prompts": []})
    rc = tc.main(["--sides", "trl", "--trl-python", str(tmp_path / "missing")])
    out = capsys.readouterr()
    assert rc == 0
    report = json.loads(out.out)
    assert set(report["trl"]) == {"8:on", "64:off"}
    assert all(v["skipped"].startswith("TRL side skipped") for v in report["trl"].values())
    assert report["ours"] == {"skipped": "not requested (--sides)"}
    assert all(r["speedup_pass"] is None for r in report["ratios"].values())
    assert "TRL side skipped" in out.err


def test_a_failing_side_reports_its_exit_code_and_log_tail(tmp_path):
    cmd = [sys.executable, "-c", "import sys; print('boom'); sys.exit(3)"]
    result = tc.run_child(cmd, tmp_path / "r.json", {}, tmp_path / "side.log", timeout=60)
    assert result["error"] == "exit 3" and result["log_tail"] == ["boom"]
