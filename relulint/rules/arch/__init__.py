"""Architecture rules (RL4xx)."""
