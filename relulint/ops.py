"""The ONNX op sets relulint knows, in one place: what counts as a linear op, a normalization, a ReLU
variant, and which ops only move, scale or read the shape of their data.

The unit view (``relulint/units.py``) and the analyses built on it read these sets; a new export pattern is
taught here and in the unit view's recognisers, nowhere else.
"""

from __future__ import annotations

# ReLU-family activations that are not plain ReLU (ReLU6 as Clip and Max(x, 0) are plain: see units.py).
VARIANT_OPS = {
    "LeakyRelu",
    "PRelu",
    "Elu",
    "Selu",
    "Celu",
    "Gelu",
    "HardSwish",
    "Mish",
    "Softplus",
    "ThresholdedRelu",
}
# The linear ops a layer's units come from, and the normalizations that may sit between one and its ReLU.
LINEAR_OPS = {"Conv", "ConvTranspose", "Gemm", "MatMul"}
NORM_OPS = {"BatchNormalization", "LayerNormalization", "GroupNormalization", "InstanceNormalization"}
# Ops that move data without changing which unit a value belongs to.
PASS_THROUGH_OPS = {"Identity", "Dropout", "Reshape", "Flatten", "Squeeze", "Unsqueeze", "Cast"}
# Ops whose output is their one computed input moved, pooled, padded or selected.
MOVING_OPS = PASS_THROUGH_OPS | {
    "Transpose",
    "Pad",
    "MaxPool",
    "AveragePool",
    "GlobalAveragePool",
    "GlobalMaxPool",
    "LpPool",
    "GlobalLpPool",
    "Slice",
    "Split",
    "Resize",
    "Upsample",
    "DepthToSpace",
    "SpaceToDepth",
    "Expand",
    "Tile",
    "Concat",
}
# Arithmetic with constants only (a scale or shift between layers) keeps the data one layer's.
CONSTANT_ARITHMETIC_OPS = {"Add", "Sub", "Mul", "Div"}
# Ops whose output has (about) the root mean square of their first input: they move, pad, pool or select.
SCALE_KEEPING_OPS = PASS_THROUGH_OPS | {
    "Transpose",
    "MaxPool",
    "AveragePool",
    "GlobalAveragePool",
    "GlobalMaxPool",
    "LpPool",
    "Pad",
    "Slice",
    "Split",
    "Gather",
    "Expand",
    "Tile",
    "Resize",
    "Upsample",
    "DepthToSpace",
    "SpaceToDepth",
    "ReduceMean",
    "ReduceMax",
}

# Ops whose output holds their input's values (some of them, rearranged): a ReLU's zeros survive them.
VALUE_MOVING_OPS = PASS_THROUGH_OPS | {"Transpose", "Concat", "Split", "Slice"}
# Ops that read only a tensor's shape: using a ReLU output there does not make it intermediate.
SHAPE_ONLY_OPS = {"Shape", "Size"}
# Exporters fold an inference-mode BatchNormalization that directly follows a Conv into the Conv's weight
# and bias (PyTorch's eval-mode export always does; onnxoptimizer's fuse_bn_into_conv and onnxsim too).
# Other normalizations depend on the input's own statistics and cannot be folded.
FOLDS_BATCHNORM = {"Conv", "ConvTranspose"}

# Variants whose output is flat (gradient zero) wherever it is not positive, like ReLU but with the edge
# elsewhere; every other variant passes some gradient below zero (leaky slopes, ELU's curve, hard-swish on
# (-3, 0)), so its units there are weak, not dead.
FLAT_BELOW_VARIANTS = {"ThresholdedRelu"}
# The negative slopes of the leaky variants when the node does not give one (ONNX's defaults).
LEAKY_DEFAULT_SLOPE = {"LeakyRelu": 0.01, "PRelu": 0.25}
