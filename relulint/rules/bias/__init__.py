"""Bias rules (RL2xx)."""
