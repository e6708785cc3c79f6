"""relulint: a linter for the dying-ReLU problem in ONNX models."""

__version__ = "0.1.0"
INFORMATION_URI = "https://github.com/relulint/relulint"
