"""Megatron-Core policy: model build (``model``), logprobs, train step, optimizer."""

from nemo_rence.policy.megatron.policy import (
    MegatronPolicy,
    MegatronPolicyConfig,
)

__all__ = ["MegatronPolicy", "MegatronPolicyConfig"]
