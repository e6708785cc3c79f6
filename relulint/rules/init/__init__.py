"""Initialization rules (RL1xx)."""
