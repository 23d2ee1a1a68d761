"""icdedit: edit real photos from text in about 7 network evaluations with Invertible
Consistency Distillation (iCD; Starodubcev et al., NeurIPS 2024)."""

__version__ = "0.1.0"
