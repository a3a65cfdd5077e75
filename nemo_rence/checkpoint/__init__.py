"""Checkpoint conversion: HF <-> Megatron (``mapping``, ``hf``), GGUF import (``gguf``),
Megatron distributed checkpoints and NeMo interop (``dist``), and the ``convert`` CLI (``cli``).
"""
