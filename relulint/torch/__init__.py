"""relulint from PyTorch: lint a module directly.

An optional part of relulint (``pip install 'relulint[torch]'``): importing ``relulint`` never imports
torch; importing ``relulint.torch`` does. ``check(module, example_inputs, data=...)`` exports the module
to ONNX in memory and runs the same analyses as the ``relulint`` command, with findings named by module
path and Python source line.
"""

from __future__ import annotations

from relulint.torch.check import check
from relulint.torch.result import Report

__all__ = ["Report", "check"]
