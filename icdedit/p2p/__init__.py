"""Prompt-to-Prompt attention control for iCD editing (docs/numerics.md section 6)."""
