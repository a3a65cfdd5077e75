"""Losses by name: ``get(name)`` returns a :class:`LossSpec` (function + typed config class).

    spec = losses.get("rence")
    cfg = spec.build_config({"beta": 0.1, "alpha": 0.5})      # or spec.config_cls(...)
    loss, metrics = spec.fn(LossBatch(...), cfg)

Every loss is a pure tensor function ``(LossBatch, Config) -> (loss, metrics)`` registered with
``@register``; ``available()`` lists the names. Modules, one per family:

    rence.py            ReNCE (eqs. 1, 2, 5) and its ablations; semi-online DPO (Group-DPO)
    conspo.py           ConSPO (eqs. 10, 15, 16)
    policy_gradient.py  GRPO, DAPO (+ overlong_penalty), Dr. GRPO, GSPO, CISPO, GMPO, SAPO
    disco.py            DisCO
    contrastive.py      per-group contrastive objectives shared by the above
    batch.py            LossBatch, the group layout, advantages (shape legend there)
"""

from nemo_rence.algorithm.losses import conspo, disco, policy_gradient, rence  # noqa: F401  (register)
from nemo_rence.algorithm.losses.batch import GroupLayout, LossBatch
from nemo_rence.algorithm.losses.policy_gradient import overlong_penalty
from nemo_rence.algorithm.losses.registry import (
    LossSpec,
    UnknownLossError,
    available,
    get,
    register,
)

__all__ = [
    "GroupLayout",
    "LossBatch",
    "LossSpec",
    "UnknownLossError",
    "available",
    "get",
    "overlong_penalty",
    "register",
]
