"""Prompt data: records, dataset and benchmark loaders, the prompt template, synthetic tasks.

- :mod:`~nemo_rence.data.config`: :class:`DataConfig`, the ``data`` section of a run (tasks,
  files under ``$NEMO_RENCE_DATA_ROOT``, held-out split, row limits).
- :mod:`~nemo_rence.data.datasets`: :func:`load_datasets`, the run's training and held-out
  prompts and the report of what was kept and skipped.
- :mod:`~nemo_rence.data.records`: :class:`PromptRecord`, :class:`LoadReport`.
- :mod:`~nemo_rence.data.loaders`: DAPO-Math-17k, MATH, DeepScaleR, generic jsonl/json/parquet.
- :mod:`~nemo_rence.data.benchmarks`: MATH500, AIME24/25/26, HMMT25, AMC, Minerva, OlympiadBench.
- :mod:`~nemo_rence.data.template`: the paper's prompt template, chat or raw, length filter.
- :mod:`~nemo_rence.data.synthetic`: arithmetic with controllable difficulty and fixed splits.
- :mod:`~nemo_rence.data.champ`: the CHAMP competition set shipped in ``champ-dataset``.
- :mod:`~nemo_rence.data.sampler`: resumable epoch sampler.
"""

from nemo_rence.data.records import LoadReport, LoadResult, PromptRecord

__all__ = ["LoadReport", "LoadResult", "PromptRecord"]
