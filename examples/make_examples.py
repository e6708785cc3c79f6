"""Build the example models in this folder (run: python examples/make_examples.py).

- healthy_convnet.onnx: Conv+BatchNorm+ReLU stem, two residual blocks, He init, zero biases.
- dying_mlp.onnx: a 4-layer Gemm+ReLU MLP whose hidden biases are strongly negative, so
  most hidden units never switch on.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import onnx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout without installing

from relulint.modelkit import ModelBuilder, mlp, resnet_block  # noqa: E402

HERE = Path(__file__).resolve().parent


def healthy_convnet() -> onnx.ModelProto:
    b = ModelBuilder(seed=1, name="healthy_convnet")
    x = b.input("image", ["batch", 3, 32, 32])
    y = b.relu(b.batchnorm(b.conv(x, 3, 16, bias=False, name="stem_conv"), 16, name="stem_bn"), "stem_relu")
    y = resnet_block(b, y, 16, "block1")
    y = resnet_block(b, y, 16, "block2")
    logits = b.gemm(b.global_pool_flatten(y), 16, 10, name="classifier")
    return b.build([logits])


def dying_mlp() -> onnx.ModelProto:
    b = ModelBuilder(seed=2, name="dying_mlp")
    x = b.input("features", ["batch", 64])
    # Biases of -4 put each hidden unit's pre-activation (std about 1.4 under He init) below
    # zero for all but a sliver of inputs.
    y = mlp(b, x, [64, 128, 128, 128, 10], bias_value=-4.0)
    return b.build([y])


EXAMPLES = {"healthy_convnet.onnx": healthy_convnet, "dying_mlp.onnx": dying_mlp}


def main(folder: Path = HERE) -> None:
    for name, make in EXAMPLES.items():
        model = make()
        onnx.checker.check_model(model)
        onnx.save(model, folder / name)
        print(folder / name, (folder / name).stat().st_size, "bytes")


if __name__ == "__main__":
    np.set_printoptions(precision=3)
    main()
