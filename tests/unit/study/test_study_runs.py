"""The runs of a study: directories, train commands, what counts as done, the executors'
commands (the GPU placement and the SLURM job array)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from nemo_rence.errors import ConfigError
from nemo_rence.study.config import StudyConfig
from nemo_rence.study.runs import (
    CONFIG_FILE,
    SUBMIT,
    array_spec,
    gpu_commands,
    is_done,
    plan_runs,
    slurm_command,
    train_command,
)

STUDY = {
    "name": "s",
    "arms": [
        {"name": "rence", "overrides": ["algorithm=rence"]},
        {"name": "grpo", "overrides": ["algorithm=grpo"]},
    ],
    "seeds": [3, 4],
    "overrides": ["model=tiny"],
    "budget": {"kind": "optimizer_steps", "amount": 8},
    "max_iterations": 50,
    "slurm": {"gpus_per_node": 0, "ntasks_per_node": 1, "time": "00:10:00", "partition": "debug"},
}


def test_one_run_directory_per_arm_and_seed_arm_major(tmp_path):
    specs = plan_runs(StudyConfig.from_mapping(STUDY), tmp_path)
    assert [(s.index, s.label) for s in specs] == [
        (0, "rence/seed3"),
        (1, "rence/seed4"),
        (2, "grpo/seed3"),
        (3, "grpo/seed4"),
    ]
    assert specs[3].directory == tmp_path / "grpo" / "seed4"


def test_train_command_sets_the_budget_seed_and_directory_after_the_overrides(tmp_path):
    study = StudyConfig.from_mapping(STUDY)
    spec = plan_runs(study, tmp_path)[2]
    cmd = train_command(study, spec, python="py")
    assert cmd == [
        "py",
        "-m",
        "nemo_rence",
        "train",
        "model=tiny",
        "algorithm=grpo",
        "run.seed=3",
        f"run.out_dir={tmp_path / 'grpo' / 'seed3'}",
        "run.budget_kind=optimizer_steps",
        "run.budget_amount=8",
        "run.iterations=50",
        "run.keep_checkpoints=1",
        "--no-progress",
    ]


def test_runs_keep_the_study_s_number_of_checkpoints(tmp_path):
    study = StudyConfig.from_mapping({**STUDY, "keep_checkpoints": 3})
    assert "run.keep_checkpoints=3" in train_command(study, plan_runs(study, tmp_path)[0])
    with pytest.raises(ConfigError, match=r"study\.keep_checkpoints"):
        StudyConfig.from_mapping({**STUDY, "keep_checkpoints": 0})
    with pytest.raises(ConfigError, match="set by the study"):
        StudyConfig.from_mapping({**STUDY, "overrides": ["run.keep_checkpoints=5"]})


def test_done_means_final_evaluation_under_this_budget(tmp_path):
    study = StudyConfig.from_mapping(STUDY)
    spec = plan_runs(study, tmp_path)[0]
    assert not is_done(study, spec)
    spec.directory.mkdir(parents=True)
    config = {"run": {"budget_kind": "optimizer_steps", "budget_amount": 8}}
    (spec.directory / "config.json").write_text(json.dumps(config))
    rows = [{"iteration": 1, "filter/rollouts": 8}]
    (spec.directory / "metrics.jsonl").write_text(json.dumps(rows[0]) + "\n")
    assert not is_done(study, spec)  # stopped before its final evaluation
    with (spec.directory / "metrics.jsonl").open("a") as f:
        f.write(json.dumps({"iteration": 1, "eval/accuracy": 0.0, "eval/is_after": 1.0}) + "\n")
    assert is_done(study, spec)
    bigger = StudyConfig.from_mapping(
        {**STUDY, "budget": {"kind": "optimizer_steps", "amount": 16}}
    )
    assert not is_done(bigger, spec)  # a larger budget: the run has more to do


def test_gpus_take_runs_round_robin_one_each(tmp_path):
    study = StudyConfig.from_mapping(STUDY)
    placed = gpu_commands(study, plan_runs(study, tmp_path), ["0", "1", "2"])
    assert [gpu for gpu, _ in placed] == ["0", "1", "2", "0"]
    assert placed[3][1] == train_command(study, plan_runs(study, tmp_path)[3])


def test_array_spec_compresses_ranges():
    assert array_spec([0, 1, 2, 3]) == "0-3"
    assert array_spec([5, 1, 3, 4]) == "1,3-5"


def test_slurm_job_array_has_one_task_per_pending_run(tmp_path):
    study = StudyConfig.from_mapping(STUDY)
    pending = [s for s in plan_runs(study, tmp_path) if s.index != 1]
    cmd = slurm_command(study, tmp_path, pending, dry_run=True)
    assert cmd[0] == str(SUBMIT)
    entry = cmd[cmd.index("--entry") + 1]
    assert (
        entry == f"{sys.executable} -m nemo_rence study {tmp_path.resolve() / CONFIG_FILE} --task"
    )
    assert cmd[cmd.index("--sbatch-arg") + 1] == "--array=0,2-3"
    assert cmd[cmd.index("--gpus-per-node") + 1] == "0"
    assert cmd[cmd.index("--ntasks-per-node") + 1] == "1"
    assert cmd[cmd.index("--partition") + 1] == "debug"
    # submit.sh's dry run prints the sbatch line of the array (no SLURM needed)
    out = subprocess.run(["bash", *cmd], capture_output=True, text=True, check=True).stdout
    assert "sbatch" in out and "--array=0\\,2-3" in out and "train.sbatch" in out
    assert "--ntasks-per-node=1" in out and "--time=00:10:00" in out
    job_env = (tmp_path / "job.env").read_text()
    assert "--array=0\\,2-3" in job_env


def _recording_command(study, spec, python=sys.executable):
    """A stand-in for ``nemo-rence train``: writes its slot's environment and its start/end."""
    script = (
        "import json, os, sys, time; t0 = time.time(); time.sleep(1.5); "
        "json.dump({'omp': os.environ.get('OMP_NUM_THREADS'), "
        "'gpu': os.environ.get('CUDA_VISIBLE_DEVICES'), 't0': t0, 't1': time.time()}, "
        "open(sys.argv[1], 'w'))"
    )
    spec.directory.mkdir(parents=True, exist_ok=True)
    return [python, "-c", script, str(spec.directory / "slot.json")]


def _slots_used(tmp_path, study):
    specs = plan_runs(study, tmp_path)
    return [json.loads((s.directory / "slot.json").read_text()) for s in specs]


def test_local_jobs_run_side_by_side_sharing_the_cores(tmp_path, monkeypatch):
    from nemo_rence.study import runs

    monkeypatch.setattr(runs, "train_command", _recording_command)
    monkeypatch.setattr(runs, "cpu_threads_per_job", lambda jobs: 8 // jobs)
    study = StudyConfig.from_mapping({**STUDY, "jobs": 2})
    codes = runs.run_local(study, tmp_path, plan_runs(study, tmp_path), say=lambda _: None)
    assert set(codes.values()) == {0} and len(codes) == 4
    used = _slots_used(tmp_path, study)
    assert {u["omp"] for u in used} == {"4"}  # 8 cores shared by 2 jobs
    first, second = used[0], used[1]
    assert second["t0"] < first["t1"]  # the first two ran side by side
    starts = sorted(u["t0"] for u in used)
    ends = sorted(u["t1"] for u in used)
    assert starts[2] >= ends[0] - 0.05  # never more than 2 at a time


def test_gpu_slots_give_each_run_its_gpu(tmp_path, monkeypatch):
    from nemo_rence.study import runs

    monkeypatch.setattr(runs, "train_command", _recording_command)
    study = StudyConfig.from_mapping(STUDY)
    runs.run_gpus(study, tmp_path, plan_runs(study, tmp_path), ["5", "7"], say=lambda _: None)
    assert sorted(u["gpu"] for u in _slots_used(tmp_path, study)) == ["5", "5", "7", "7"]


def test_jobs_must_be_a_positive_integer():
    with pytest.raises(ConfigError, match=r"study\.jobs"):
        StudyConfig.from_mapping({**STUDY, "jobs": 0})


def test_an_arm_may_have_its_own_seeds(tmp_path):
    arms = [
        {"name": "rence", "overrides": ["algorithm=rence"]},
        {"name": "probe", "overrides": ["optim.lr=3e-5"], "seeds": [3]},
    ]
    study = StudyConfig.from_mapping({**STUDY, "arms": arms})
    assert [s.label for s in plan_runs(study, tmp_path)] == [
        "rence/seed3",
        "rence/seed4",
        "probe/seed3",
    ]
    assert StudyConfig.from_mapping(study.to_dict()) == study  # study-config.json keeps them
    with pytest.raises(ConfigError, match=r"arms\[probe\]\.seeds"):
        StudyConfig.from_mapping({**STUDY, "arms": [{**arms[1], "seeds": [1, 1]}]})
