"""Normalization rules (RL3xx)."""
