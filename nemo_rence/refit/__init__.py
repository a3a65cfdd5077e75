"""Policy -> rollout-engine weight refit, and the engine-vs-policy logprob check."""

from nemo_rence.refit.refit import (
    RefitConfig,
    RefitMismatchError,
    RefitReport,
    Refitter,
    logprob_gap,
)

__all__ = ["RefitConfig", "RefitMismatchError", "RefitReport", "Refitter", "logprob_gap"]
