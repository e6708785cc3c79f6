"""``onnx``, imported on first use: ``relulint --version``, ``--help``, ``--list-rules`` and ``--explain``
never parse a model, and ``import onnx`` costs more than all of the rest of relulint's start-up (it pulls
in ml_dtypes and protobuf; 0.2-0.3 s, and about 1.5 s with ml_dtypes 0.7.0).

The modules that handle protos (loader, graph, tensors) refer to ``onnx.X`` at run time only, never at
import time, so the real import happens when the first model is loaded.
"""

from __future__ import annotations

import importlib.util
import sys
from types import ModuleType
from typing import TYPE_CHECKING


def lazy_module(name: str) -> ModuleType:
    """The module ``name``, executed on its first attribute access (the module itself if already imported).

    It is put in ``sys.modules``, so every ``import onnx`` elsewhere shares it. The first access happens on
    the main thread, in the loader, before any thread of relulint's own touches onnx.
    """
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.find_spec(name)
    if spec is None or spec.loader is None:  # not installed: let a plain import raise the usual error
        return importlib.import_module(name)
    loader = importlib.util.LazyLoader(spec.loader)
    spec.loader = loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    loader.exec_module(module)
    return module


if TYPE_CHECKING:  # the type checker sees the real module and its types
    import onnx
else:
    onnx = lazy_module("onnx")
