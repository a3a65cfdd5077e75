"""Policies: the model being trained (Megatron-Core backend under ``policy.megatron``)."""

from nemo_rence.policy.interface import (
    LossFn,
    MicroBatch,
    Policy,
    PolicyBatch,
    algorithm_loss,
)

__all__ = ["LossFn", "MicroBatch", "Policy", "PolicyBatch", "algorithm_loss"]
