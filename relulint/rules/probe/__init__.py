"""Probe rules (RL5xx): need the probe analysis."""
