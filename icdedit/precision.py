"""Working precision: where the official code computes in float32 under an fp16 model (LoRA
deltas, softmaxes, latents between steps), icdedit computes in float32 or, for a float64
model (`--dtype fp64`, the reference precision that the tests measure float32 against), in
float64."""

from __future__ import annotations

import torch


def at_least_float32(dtype: torch.dtype) -> torch.dtype:
    """float32 for fp16, bf16 and float32; float64 stays float64."""
    return torch.promote_types(dtype, torch.float32)
