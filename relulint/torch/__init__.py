"""relulint from PyTorch: lint a module directly, and watch its units die (or not) while it trains.

An optional part of relulint (``pip install 'relulint[torch]'``): importing ``relulint`` never imports
torch; importing ``relulint.torch`` does. The entry points:

- ``check(module, example_inputs, data=...)`` exports the module to ONNX in memory and runs the same
  analyses as the ``relulint`` command, with findings named by module path and Python source line.
- ``DeadUnitMonitor(module)`` counts, during training, how often each ReLU unit is positive, and warns
  (``DeadUnitWarning``) when a layer crosses RL501's or RL502's threshold.
"""

from __future__ import annotations

from relulint.torch.check import check
from relulint.torch.monitor import DeadUnitMonitor, DeadUnitWarning, LayerCheck
from relulint.torch.result import Report

__all__ = ["DeadUnitMonitor", "DeadUnitWarning", "LayerCheck", "Report", "check"]
