"""``nemo-rence study``: compare methods at one equal budget, over seeds, with intervals.

A study is a set of *arms* (lists of training overrides, ``algorithm=grpo``), *seeds*, common
overrides and ONE budget (``run.budget_kind`` / ``run.budget_amount``) that every arm spends.
Each arm x seed is an ordinary, resumable run directory ``<study_dir>/<arm>/seed<k>``
(:mod:`nemo_rence.study.runs`); the report compares the arms at the budget
(:mod:`nemo_rence.study.report`). docs/study.md is the user's guide.

    config.py   the study file (``conf/study/*.yaml``) and its checks
    runs.py     run directories, the ``nemo-rence train`` command of each, the executors
    report.py   equal-budget metric, bootstrap intervals, differences, study.md/json, plots
    cli.py      the sub-command
"""
