"""Proof rules (RL6xx): need the bounds analysis over an input domain."""
