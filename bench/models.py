"""The benchmark models, generated on demand into bench/models/ (ignored by git) and reused.

Each generator writes one model; ``ensure(name)`` builds it only when the file is missing or
was written by an older generator (the version is kept in a stamp file beside it).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from relulint.decoderkit import OPT_1_3B, OPT_125M, save_decoder
from relulint.modelkit import ModelBuilder, mlp, resnet_block

MODELS_DIR = Path(__file__).resolve().parent / "models"
GENERATOR_VERSION = 4  # bump when a generator changes: cached models are then rebuilt


@dataclass(frozen=True)
class BenchModel:
    name: str
    path: Path
    input_name: str
    sample_shape: tuple[int, ...]  # one sample's shape; the batch dimension is dynamic ("N")
    description: str
    tokens: bool = False  # a language model: input_ids [batch, sequence] below the vocabulary, attention_mask ones


# ---- generators ------------------------------------------------------------------------------


def _bottleneck(b: ModelBuilder, x: str, cin: int, mid: int, cout: int, stride: int, name: str) -> str:
    """ResNet-50 bottleneck: 1x1 -> 3x3 -> 1x1 convs with BatchNorm, projection shortcut when needed."""
    y = b.relu(b.batchnorm(b.conv(x, cin, mid, k=1, bias=False, name=f"{name}_c1"), mid), f"{name}_r1")
    y = b.relu(b.batchnorm(b.conv(y, mid, mid, k=3, stride=stride, bias=False, name=f"{name}_c2"), mid), f"{name}_r2")
    y = b.batchnorm(b.conv(y, mid, cout, k=1, bias=False, name=f"{name}_c3"), cout)
    if stride != 1 or cin != cout:
        x = b.batchnorm(b.conv(x, cin, cout, k=1, stride=stride, bias=False, name=f"{name}_ds"), cout)
    return b.relu(b.add(y, x), f"{name}_out")


def make_resnet50() -> onnx.ModelProto:
    """ResNet-50 layout (3-4-6-3 bottlenecks, 25.5M parameters), He init, input N x 3 x 224 x 224."""
    b = ModelBuilder(seed=0, name="resnet50")
    x = b.input("x", ["N", 3, 224, 224])
    y = b.relu(b.batchnorm(b.conv(x, 3, 64, k=7, stride=2, bias=False, name="stem"), 64), "stem_relu")
    y = b.node("MaxPool", [y], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])
    cin = 64
    for stage, (mid, blocks, stride) in enumerate([(64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2)]):
        for index in range(blocks):
            y = _bottleneck(b, y, cin, mid, mid * 4, stride if index == 0 else 1, f"s{stage}b{index}")
            cin = mid * 4
    y = b.gemm(b.global_pool_flatten(y), 2048, 1000, name="fc")
    return b.build([y], [["N", 1000]])


def make_mlp(depth: int, width: int, name: str) -> onnx.ModelProto:
    """``depth`` Gemm+ReLU layers of ``width`` units (He init, zero biases), then a 10-way Gemm."""
    b = ModelBuilder(seed=0, name=name)
    x = b.input("x", ["N", width])
    y = mlp(b, x, [width] * (depth + 1) + [10])
    return b.build([y], [["N", 10]])


def make_chain(nodes: int, width: int = 16) -> onnx.ModelProto:
    """A chain of ``nodes`` small nodes: repeated Gemm -> Relu -> Add(const) -> Identity on [N, 16].

    Built with onnx.helper directly: modelkit's per-node bookkeeping is not what is measured here.
    """
    rng = np.random.default_rng(0)
    graph_nodes, initializers = [], []
    zeros = numpy_helper.from_array(np.zeros(width, np.float32), "zeros")
    initializers.append(zeros)
    current = "x"
    for index in range(nodes // 4):
        w = numpy_helper.from_array(
            (rng.standard_normal((width, width)) * np.sqrt(2 / width)).astype(np.float32), f"w{index}"
        )
        bias = numpy_helper.from_array(np.zeros(width, np.float32), f"b{index}")
        initializers += [w, bias]
        graph_nodes += [
            helper.make_node("Gemm", [current, w.name, bias.name], [f"g{index}"], name=f"Gemm_{index}", transB=1),
            helper.make_node("Relu", [f"g{index}"], [f"r{index}"], name=f"Relu_{index}"),
            helper.make_node("Add", [f"r{index}", "zeros"], [f"a{index}"], name=f"Add_{index}"),
            helper.make_node("Identity", [f"a{index}"], [f"i{index}"], name=f"Identity_{index}"),
        ]
        current = f"i{index}"
    graph = helper.make_graph(
        graph_nodes,
        f"chain{nodes}",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", width])],
        [helper.make_tensor_value_info(current, TensorProto.FLOAT, ["N", width])],
        initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="relulint-bench")
    model.ir_version = 8
    return model


def make_external_mlp(depth: int = 16, width: int = 4096) -> onnx.ModelProto:
    """``depth`` Gemm+ReLU layers of 4096 units: 16 x 4096^2 x 4 bytes = 1.07 GB of weights."""
    rng = np.random.default_rng(0)
    nodes, initializers = [], []
    current = "x"
    for index in range(depth):
        weight = rng.standard_normal((width, width), dtype=np.float32)
        weight *= np.float32(np.sqrt(2 / width))
        initializers.append(numpy_helper.from_array(weight, f"fc{index}_w"))
        initializers.append(numpy_helper.from_array(np.zeros(width, np.float32), f"fc{index}_b"))
        del weight
        nodes.append(
            helper.make_node(
                "Gemm", [current, f"fc{index}_w", f"fc{index}_b"], [f"fc{index}"], name=f"fc{index}", transB=1
            )
        )
        nodes.append(helper.make_node("Relu", [f"fc{index}"], [f"fc{index}_relu"], name=f"fc{index}_relu"))
        current = f"fc{index}_relu"
    graph = helper.make_graph(
        nodes,
        "external1g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", width])],
        [helper.make_tensor_value_info(current, TensorProto.FLOAT, ["N", width])],
        initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="relulint-bench")
    model.ir_version = 8
    return model


def make_small(index: int) -> onnx.ModelProto:
    """One of the --jobs folder's models: alternately a small ResNet (300k params) and an MLP (1.3M params)."""
    b = ModelBuilder(seed=index, name=f"small{index}")
    if index % 2 == 0:
        x = b.input("x", ["N", 3, 32, 32])
        y = b.relu(b.batchnorm(b.conv(x, 3, 64, bias=False, name="stem"), 64, name="stem_bn"), "stem_relu")
        for block in range(4):
            y = resnet_block(b, y, 64, f"block{block}")
        y = b.gemm(b.global_pool_flatten(y), 64, 10, name="head")
        return b.build([y], [["N", 10]])
    x = b.input("x", ["N", 256])
    y = mlp(b, x, [256] + [512] * 5 + [10], bias_value=-0.5 if index % 4 == 1 else 0.0)
    return b.build([y], [["N", 10]])


# ---- registry --------------------------------------------------------------------------------


def _save(model: onnx.ModelProto, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save_model(model, str(path))


def _save_external(model: onnx.ModelProto, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = path.with_name(path.name + ".data")
    if data.exists():
        data.unlink()  # onnx appends to an existing data file
    onnx.save_model(
        model,
        str(path),
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location=data.name,
        size_threshold=1024,
    )


@dataclass(frozen=True)
class Recipe:
    model: BenchModel
    build: Callable[[], onnx.ModelProto] | None
    save: Callable[[onnx.ModelProto, Path], None] = _save
    # Builds and saves in one step, for models too large to hold (their weights are written in blocks).
    write: Callable[[Path], object] | None = None


def _recipe(
    name: str, shape: tuple[int, ...], description: str, build, save=_save, folder: Path = MODELS_DIR
) -> Recipe:
    return Recipe(BenchModel(name, folder / f"{name}.onnx", "x", shape, description), build, save)


RECIPES: dict[str, Recipe] = {
    r.model.name: r
    for r in [
        _recipe(
            "resnet50",
            (3, 224, 224),
            "ResNet-50 shape, 25.5M params, Conv+BN+ReLU bottlenecks, residual Adds",
            make_resnet50,
        ),
        _recipe(
            "mlp50x1024",
            (1024,),
            "50 Gemm+ReLU layers of width 1024, 52.5M params",
            lambda: make_mlp(50, 1024, "mlp50x1024"),
        ),
        _recipe(
            "graph20k", (16,), "20,000 small nodes (Gemm/Relu/Add/Identity chain on [N,16])", lambda: make_chain(20_000)
        ),
        _recipe(
            "external1g",
            (4096,),
            "16 Gemm+ReLU of width 4096, 1.07 GB of weights as external data",
            make_external_mlp,
            _save_external,
        ),
        _recipe("nodes1k", (16,), "chain of 1,000 nodes", lambda: make_chain(1_000)),
        _recipe("nodes10k", (16,), "chain of 10,000 nodes", lambda: make_chain(10_000)),
        _recipe("nodes100k", (16,), "chain of 100,000 nodes", lambda: make_chain(100_000)),
        _recipe(
            "params4m", (1024,), "4 Gemm+ReLU layers of width 1024 (4.2M params)", lambda: make_mlp(4, 1024, "params4m")
        ),
        _recipe(
            "params16m",
            (2048,),
            "4 Gemm+ReLU layers of width 2048 (16.8M params)",
            lambda: make_mlp(4, 2048, "params16m"),
        ),
        _recipe(
            "params67m",
            (4096,),
            "4 Gemm+ReLU layers of width 4096 (67.1M params)",
            lambda: make_mlp(4, 4096, "params67m"),
        ),
    ]
}

# OPT-shaped decoders (ReLU FFNs, random N(0, 0.02) weights), written with their weights streamed into
# external data: OPT-125M 0.65 GB, OPT-1.3B 5.7 GB (the tied lm head is a transposed copy, as exports fold it).
for _name, _shape, _what in (
    ("opt125m", OPT_125M, "OPT-125M shape: 12 layers, d_model 768, FFN 3072"),
    ("opt1_3b", OPT_1_3B, "OPT-1.3B shape: 24 layers, d_model 2048, FFN 8192"),
):
    RECIPES[_name] = Recipe(
        BenchModel(
            _name,
            MODELS_DIR / f"{_name}.onnx",
            "input_ids",
            (128,),
            f"{_what}, {_shape.parameters / 1e6:,.0f}M params as external data",
            tokens=True,
        ),
        None,
        write=lambda path, shape=_shape: save_decoder(path, shape),
    )

SMALL_FOLDER = MODELS_DIR / "small50"
SMALL_COUNT = 50


def _stamp(path: Path) -> Path:
    return path.with_name(path.name + ".stamp")


def _fresh(path: Path) -> bool:
    stamp = _stamp(path)
    if not path.exists() or not stamp.exists():
        return False
    return json.loads(stamp.read_text()).get("version") == GENERATOR_VERSION


def _write(path: Path, build: Callable[[], onnx.ModelProto], save) -> None:
    model = build()
    save(model, path)
    del model
    _stamp(path).write_text(json.dumps({"version": GENERATOR_VERSION}))


def _write_recipe(recipe: Recipe) -> None:
    path = recipe.model.path
    if recipe.write is None:
        return _write(path, recipe.build, recipe.save)
    path.parent.mkdir(parents=True, exist_ok=True)
    recipe.write(path)
    _stamp(path).write_text(json.dumps({"version": GENERATOR_VERSION}))


def ensure(name: str) -> BenchModel:
    """The model, generated first if missing or stale."""
    recipe = RECIPES[name]
    if not _fresh(recipe.model.path):
        print(f"  generating {name} ...", flush=True)
        _write_recipe(recipe)
    return recipe.model


def ensure_small_folder() -> Path:
    """bench/models/small50/: 50 small models for the --jobs measurement."""
    for index in range(SMALL_COUNT):
        path = SMALL_FOLDER / f"small{index:02d}.onnx"
        if not _fresh(path):
            _write(path, lambda i=index: make_small(i), _save)
    return SMALL_FOLDER


def weight_files(model: BenchModel) -> list[Path]:
    """The files holding the model's bytes (the .onnx and any external data beside it)."""
    data = model.path.with_name(model.path.name + ".data")
    return [model.path] + ([data] if data.exists() else [])


def size_mb(model: BenchModel) -> float:
    return sum(os.path.getsize(p) for p in weight_files(model)) / 1e6


def prepare(names: list[str], small_folder: bool = False) -> None:
    """Generate what is missing in a child process, so the caller never holds a model's memory.

    (A benchmark runner that generated a 1 GB model itself would stay large, and every process it
    forks afterwards would start from its size.)
    """
    missing = [name for name in names if not _fresh(RECIPES[name].model.path)]
    if small_folder and not all(_fresh(SMALL_FOLDER / f"small{i:02d}.onnx") for i in range(SMALL_COUNT)):
        missing.append("small50")
    if missing:
        subprocess.run([sys.executable, __file__, *missing], check=True)


def main(argv: list[str]) -> None:
    for name in argv:
        if name == "small50":
            print("  generating small50/ ...", flush=True)
            ensure_small_folder()
        else:
            ensure(name)


if __name__ == "__main__":
    main(sys.argv[1:])
