"""Fixtures of the SLURM tests (see ``cluster.py``)."""

from tests.slurm.cluster import slurm_cluster

__all__ = ["slurm_cluster"]
