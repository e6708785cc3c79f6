"""Checkpoint comparison rules (RL7xx): need the compare analysis (--compare OLD.onnx)."""
