"""nemo-rence: ReNCE and its RLVR peers on the NVIDIA stack (Megatron-Core, TE, TensorRT-LLM).

Data flow of one training iteration (Algorithm 1 of the ReNCE paper), one sub-package per stage::

    data/ ──► algorithm/filter ──► rollout/ ──► rewards/ ──► algorithm/filter ──► policy/ ──► refit/
    prompts    sample, cache Q     K rollouts    1/0.1/0      rho, mastered        n_update    weights
                                                                                  AdamW steps  to engine
"""

__version__ = "0.1.0"
