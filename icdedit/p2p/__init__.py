"""Prompt-to-Prompt attention control for iCD editing (ICD_SPEC section 6)."""
