"""Rollout generation: the GenerationEngine protocol and its backends (hf on CPU; trtllm, vllm on GPU)."""

from nemo_rence.rollout.interface import GenerationEngine, Rollouts, SamplingParams

__all__ = ["GenerationEngine", "Rollouts", "SamplingParams"]
