"""Fuzzing (issue 6): mutated models must end in a result or a clear error, never in a crash.

Valid seed models are mutated two ways: their bytes (flip, delete, duplicate, insert, truncate) and
their protobuf fields (drop, duplicate, retype, resize, rename, anywhere in the message tree). Each
mutant goes through the engine in-process, as the CLI would run it (RELULINT_DEBUG unset, so an
internal error would be caught and reported rather than raised), and through every renderer. A
mutant may be unreadable (exit 2) or full of findings; what it may not do is reach a fallback that
catches a crash: an error or note saying "internal error", "failed on this model" or "analysis failed".

The examples are derandomized so CI runs the same cases every time; the number of examples per test
is below (``BYTE_EXAMPLES + FIELD_EXAMPLES + GRAPH_EXAMPLES``: 2,000 mutants in all).
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import math
import os
import signal
import tempfile
import traceback
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnx
import pytest
from google.protobuf.descriptor import FieldDescriptor
from hypothesis import HealthCheck, event, given, seed, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

from relulint.config import Config
from relulint.engine import analyse
from relulint.modelkit import ModelBuilder, mlp, resnet_block
from relulint.report import FORMATS, Run, render

# RELULINT_FUZZ_SCALE=20 (and RELULINT_FUZZ_SEED=n for other cases) runs a longer hunt locally.
SCALE = float(os.environ.get("RELULINT_FUZZ_SCALE", "1"))
RANDOM = os.environ.get("RELULINT_FUZZ_SEED")
BYTE_EXAMPLES = int(500 * SCALE)
FIELD_EXAMPLES = int(800 * SCALE)
GRAPH_EXAMPLES = int(700 * SCALE)
PROBE_EXAMPLES = int(40 * SCALE)  # with the probe on: a worker process and an onnxruntime session each
CASE_SECONDS = 60  # a mutant that takes longer is a hang: fail with the stack where it hangs
CRASH_MARKERS = ("internal error", "failed on this model", "analysis failed")
RENDERERS = [fmt for fmt in FORMATS if importlib.util.find_spec(f"relulint.report.{fmt}") is not None]


# ---- seed models ------------------------------------------------------------------------------------
def dying_mlp() -> onnx.ModelProto:
    b = ModelBuilder(seed=1)
    x = b.input("x", [2, 8])
    return b.build([mlp(b, x, [8, 16, 16, 4], bias_value=-3.0)])


def residual_convnet() -> onnx.ModelProto:
    b = ModelBuilder(seed=2)
    x = b.input("x", [1, 3, 8, 8])
    y = b.relu(b.batchnorm(b.conv(x, 3, 4, name="stem"), 4, beta=np.array([0, -2, 1, 0]), name="bn"), "stem_relu")
    y = resnet_block(b, y, 4, "block")
    y = b.leaky_relu(b.gemm(b.global_pool_flatten(y), 4, 6, name="head"), name="head_act")
    return b.build([y])


def branches_and_quantized() -> onnx.ModelProto:
    """An If with a ReLU in each branch, int8 weights behind DequantizeLinear, a Constant-node weight."""
    b = ModelBuilder(seed=3)
    x = b.input("x", [1, 4])
    cond = b.input("cond", [], TensorProto.BOOL)
    q = b.const(np.arange(-8, 8, dtype=np.int8).reshape(4, 4), "Wq")
    w = b.node("DequantizeLinear", [q, b.const(np.float32(0.1), "scale"), b.const(np.int8(0), "zero")], "dq")
    h = b.relu(
        b.node("Add", [b.node("MatMul", [x, w], "mm"), b.const(np.full(4, -0.5, np.float32), "bias")], "add"), "act"
    )
    branches = []
    for name, slope in (("then", 0.0), ("else", 0.1)):
        weight = numpy_helper.from_array(np.eye(4, dtype=np.float32) * 0.5, f"{name}_w")
        nodes = [
            helper.make_node("Constant", [], [f"{name}_c"], value=weight),
            helper.make_node("MatMul", [h, f"{name}_c"], [f"{name}_h"], name="MatMul_0"),
            helper.make_node("LeakyRelu", [f"{name}_h"], [f"{name}_y"], name="Act_1", alpha=slope),
        ]
        out = helper.make_tensor_value_info(f"{name}_y", TensorProto.FLOAT, [1, 4])
        branches.append(helper.make_graph(nodes, name, [], [out]))
    y = b.node("If", [cond], "if", then_branch=branches[0], else_branch=branches[1])
    return b.build([y], [[1, 4]])


def local_function() -> onnx.ModelProto:
    opsets = [helper.make_opsetid("", 17), helper.make_opsetid("local", 1)]
    body = [helper.make_node("MatMul", ["x", "w"], ["h"]), helper.make_node("Relu", ["h"], ["y"])]
    function = helper.make_function("local", "Dense", ["x", "w"], ["y"], body, opsets)
    w = numpy_helper.from_array(np.random.default_rng(4).standard_normal((4, 4)).astype(np.float32), "W")
    graph = helper.make_graph(
        [helper.make_node("Dense", ["x", "W"], ["y"], domain="local", name="dense")],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
        [w],
    )
    return helper.make_model(graph, opset_imports=opsets, functions=[function])


SEEDS = {
    "mlp": dying_mlp(),
    "convnet": residual_convnet(),
    "branches": branches_and_quantized(),
    "function": local_function(),
}
SEED_BYTES = {name: model.SerializeToString() for name, model in SEEDS.items()}


@pytest.fixture(scope="module")
def folder() -> Iterator[Path]:
    """One folder for every mutant, holding an external-data file the mutants may point at."""
    with tempfile.TemporaryDirectory(prefix="relulint-fuzz-") as name:
        path = Path(name)
        (path / "weights.bin").write_bytes(np.arange(4096, dtype=np.float32).tobytes())
        yield path


# ---- running one mutant -----------------------------------------------------------------------------
@contextlib.contextmanager
def time_limit(seconds: int) -> Iterator[None]:
    def hang(signum, frame):
        raise TimeoutError(f"a mutant took over {seconds} s: a hang")

    previous = signal.signal(signal.SIGALRM, hang)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def check_mutant(data: bytes, folder: Path, probe: bool = False) -> None:
    path = folder / "mutant.onnx"
    path.write_bytes(data)
    config = Config(probe=probe, samples=8, batch=4)
    with time_limit(CASE_SECONDS):
        result = analyse(str(path), config)
        run = Run(results=[result], config=config)
        outputs = {fmt: render(fmt, run) for fmt in RENDERERS}
    assert not any(marker in (result.error or "") for marker in CRASH_MARKERS), explain(path, config)
    for note in result.notes:
        assert not any(marker in note.message for marker in CRASH_MARKERS), explain(path, config)
    assert "\n" not in (result.error or "")  # the CLI prints it as one line
    json.loads(outputs["json"])  # valid JSON (no NaN, no bytes)
    if result.error is not None:
        assert result.error and not result.findings
    # --hypothesis-show-statistics shows how the mutants ended: they must not all be unreadable
    event("unreadable (exit 2)" if result.error else "analysed with findings" if result.findings else "analysed, clean")


def explain(path: Path, config: Config) -> str:
    """The traceback behind a caught crash: the same analysis again with internal errors raising."""
    os.environ["RELULINT_DEBUG"] = "1"
    try:
        analyse(str(path), config)
    except Exception:
        return traceback.format_exc()
    finally:
        del os.environ["RELULINT_DEBUG"]
    return "(it did not raise again)"


@pytest.fixture(autouse=True)
def user_environment(monkeypatch):
    monkeypatch.delenv("RELULINT_DEBUG", raising=False)  # internal errors become results, as for a user
    monkeypatch.delenv("GITHUB_STEP_SUMMARY", raising=False)  # the github renderer would append to it


# ---- byte mutations -----------------------------------------------------------------------------------
@st.composite
def byte_mutants(draw) -> bytes:
    data = bytearray(SEED_BYTES[draw(st.sampled_from(sorted(SEED_BYTES)))])
    for _ in range(draw(st.integers(1, 4))):
        size = len(data)
        if not size:
            break
        start = draw(st.integers(0, size - 1))
        length = draw(st.integers(1, min(64, size - start)))
        kind = draw(st.sampled_from(["flip", "delete", "duplicate", "insert", "truncate", "set"]))
        if kind == "flip":
            data[start] ^= 1 << draw(st.integers(0, 7))
        elif kind == "delete":
            del data[start : start + length]
        elif kind == "duplicate":
            data[start:start] = data[start : start + length]
        elif kind == "insert":
            data[start:start] = draw(st.binary(min_size=1, max_size=16))
        elif kind == "truncate":
            del data[start:]
        else:  # a byte that often means something to protobuf: a tag, a length, a varint continuation
            data[start] = draw(st.sampled_from([0x00, 0x01, 0x08, 0x0A, 0x12, 0x3A, 0x7F, 0x80, 0xFF]))
    return bytes(data)


@settings(
    max_examples=BYTE_EXAMPLES,
    deadline=None,
    derandomize=RANDOM is None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=byte_mutants())
@seed(int(RANDOM or 0))
def test_byte_mutants_never_crash(folder, data):
    check_mutant(data, folder)


# ---- field mutations ----------------------------------------------------------------------------------
INTERESTING_INTS = [0, 1, -1, 2, 3, 7, 16, 999, 2**31 - 1, -(2**31), 2**40, 10**12, -(10**12), 2**62]
INTERESTING_FLOATS = [0.0, -0.0, 1.0, -1.0, 1e-45, 1e-310, 3.4e38, -3.4e38, math.inf, -math.inf, math.nan]
INTERESTING_TEXT = [
    "",
    "x",
    "y",
    "w_0",
    "../weights.bin",
    "weights.bin",
    "/etc/passwd",
    "a\x00b",
    "\x1b[31m<script>",
    "com.example",
    "ai.onnx",
    "Relu",
    "Gemm",
    "If",
    "0",
    "-1",
    "9" * 30,
    "é" * 40,
]
ENUM_NAMES = {"data_type", "elem_type", "type", "data_location"}


def message_fields(message) -> list[tuple[object, FieldDescriptor]]:
    """Every (message, field) in the tree: the targets a mutation can pick."""
    targets = []
    stack = [message]
    while stack:
        current = stack.pop()
        for field in current.DESCRIPTOR.fields:
            targets.append((current, field))
            if field.type != FieldDescriptor.TYPE_MESSAGE:
                continue
            if field.is_repeated:
                stack.extend(getattr(current, field.name))
            elif current.HasField(field.name):
                stack.append(getattr(current, field.name))
    return targets


def names_in(model: onnx.ModelProto) -> list[str]:
    """Tensor and node names of the model, for renames that rewire it."""
    found = set()
    for message, field in message_fields(model):
        if field.name in ("name", "input", "output") and field.type == FieldDescriptor.TYPE_STRING:
            value = getattr(message, field.name)
            found.update(value if field.is_repeated else [value])
    return sorted(found)


def scalar_value(draw, field: FieldDescriptor, names: list[str]):
    kind = field.type
    if kind == FieldDescriptor.TYPE_STRING:
        return draw(st.sampled_from(INTERESTING_TEXT + names) | st.text(max_size=12))
    if kind == FieldDescriptor.TYPE_BYTES:
        return draw(st.binary(max_size=64))
    if kind in (FieldDescriptor.TYPE_FLOAT, FieldDescriptor.TYPE_DOUBLE):
        return draw(st.sampled_from(INTERESTING_FLOATS))
    if kind == FieldDescriptor.TYPE_BOOL:
        return draw(st.booleans())
    if kind == FieldDescriptor.TYPE_ENUM:
        return draw(st.sampled_from([v.number for v in field.enum_type.values]))
    if field.name in ENUM_NAMES:  # element and attribute types: valid, rare and invalid numbers
        return draw(st.sampled_from(list(range(0, 27)) + [99, -1]))
    unsigned = kind in (
        FieldDescriptor.TYPE_UINT32,
        FieldDescriptor.TYPE_UINT64,
        FieldDescriptor.TYPE_FIXED32,
        FieldDescriptor.TYPE_FIXED64,
    )
    value = draw(st.sampled_from(INTERESTING_INTS))
    if unsigned:
        value = abs(value)
    if kind in (FieldDescriptor.TYPE_INT32, FieldDescriptor.TYPE_SINT32, FieldDescriptor.TYPE_SFIXED32):
        value = max(-(2**31), min(2**31 - 1, value))
    if kind in (FieldDescriptor.TYPE_UINT32, FieldDescriptor.TYPE_FIXED32):
        value = min(2**32 - 1, value)
    return value


def mutate_field(draw, model: onnx.ModelProto) -> str:
    """Apply one drop / duplicate / retype / resize / rename somewhere in the model; say what."""
    names = names_in(model)
    targets = message_fields(model)
    message, field = targets[draw(st.integers(0, len(targets) - 1))]
    repeated = field.is_repeated
    is_message = field.type == FieldDescriptor.TYPE_MESSAGE
    container = getattr(message, field.name)
    kind = draw(st.sampled_from(["drop", "duplicate", "retype", "resize", "rename"]))
    if kind == "drop":
        if repeated and len(container):
            del container[draw(st.integers(0, len(container) - 1))]
        else:
            message.ClearField(field.name)
    elif kind == "duplicate" and repeated and len(container):
        item = container[draw(st.integers(0, len(container) - 1))]
        if is_message:
            container.add().CopyFrom(item)
        else:
            container.append(item)
    elif kind == "resize" and field.name == "raw_data":
        data = message.raw_data
        message.raw_data = data[: draw(st.integers(0, len(data)))] if draw(st.booleans()) else data + data[:8]
    elif kind == "resize" and repeated and not is_message:
        value = scalar_value(draw, field, names)
        if len(container) and draw(st.booleans()):
            container[draw(st.integers(0, len(container) - 1))] = value
        else:
            container.append(value)
    elif is_message:
        if not repeated:
            getattr(message, field.name).SetInParent()  # an empty submessage where one was absent
        elif kind in ("retype", "rename") and len(container):  # swap in another element of the list
            a, b = draw(st.integers(0, len(container) - 1)), draw(st.integers(0, len(container) - 1))
            first, second = type(container[a])(), type(container[b])()
            first.CopyFrom(container[a])
            second.CopyFrom(container[b])
            container[a].CopyFrom(second)
            container[b].CopyFrom(first)
    else:
        value = scalar_value(draw, field, names)
        if repeated:
            if len(container):
                container[draw(st.integers(0, len(container) - 1))] = value
            else:
                container.append(value)
        else:
            setattr(message, field.name, value)
    return f"{kind} {message.DESCRIPTOR.name}.{field.name}"


@st.composite
def field_mutants(draw) -> bytes:
    model = onnx.ModelProto()
    model.CopyFrom(SEEDS[draw(st.sampled_from(sorted(SEEDS)))])
    for _ in range(draw(st.integers(1, 3))):
        event(mutate_field(draw, model).split()[0])
    return model.SerializeToString()


@settings(
    max_examples=FIELD_EXAMPLES,
    deadline=None,
    derandomize=RANDOM is None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=field_mutants())
@seed(int(RANDOM or 0))
def test_field_mutants_never_crash(folder, data):
    check_mutant(data, folder)


# ---- graph mutations: the same five kinds, aimed at what relulint reads ------------------------------
RELEVANT_OPS = [
    "Conv",
    "ConvTranspose",
    "Gemm",
    "MatMul",
    "BatchNormalization",
    "LayerNormalization",
    "GroupNormalization",
    "InstanceNormalization",
    "Relu",
    "LeakyRelu",
    "PRelu",
    "Clip",
    "Max",
    "Elu",
    "Gelu",
    "ThresholdedRelu",
    "Add",
    "Sub",
    "Mul",
    "Div",
    "Sum",
    "Sqrt",
    "Pow",
    "ReduceMean",
    "Reshape",
    "Flatten",
    "Squeeze",
    "Unsqueeze",
    "Cast",
    "Transpose",
    "Identity",
    "Dropout",
    "Constant",
    "ConstantOfShape",
    "DequantizeLinear",
    "If",
    "Loop",
    "GlobalAveragePool",
    "MaxPool",
    "Concat",
    "Split",
    "Softmax",
    "Sigmoid",
]
ATTRIBUTE_NAMES = [
    "group",
    "transA",
    "transB",
    "alpha",
    "beta",
    "axis",
    "axes",
    "perm",
    "to",
    "value",
    "min",
    "max",
    "allowzero",
    "epsilon",
    "block_size",
    "kernel_shape",
    "pads",
    "strides",
    "num_groups",
    "keepdims",
]
ELEMENT_TYPES = [
    TensorProto.FLOAT,
    TensorProto.FLOAT16,
    TensorProto.BFLOAT16,
    TensorProto.DOUBLE,
    TensorProto.INT8,
    TensorProto.UINT8,
    TensorProto.INT32,
    TensorProto.INT64,
    TensorProto.BOOL,
    TensorProto.INT4,
]


def attribute_value(draw):
    return draw(
        st.sampled_from(INTERESTING_INTS)
        | st.sampled_from(INTERESTING_FLOATS)
        | st.lists(st.sampled_from(INTERESTING_INTS[:8]), min_size=1, max_size=6)
        | st.lists(st.sampled_from(INTERESTING_FLOATS), min_size=1, max_size=4)
        | st.sampled_from(["", "NOTSET", "SAME_UPPER", "x"])
        | st.builds(
            lambda a: numpy_helper.from_array(a),
            st.sampled_from(
                [np.zeros((0,), np.float32), np.float32(np.nan), np.ones((2, 2), np.int64), np.array([-1], np.int64)]
            ),
        )
    )


def random_tensor(draw, name: str) -> TensorProto:
    shape = draw(st.lists(st.sampled_from([0, 1, 2, 3, 4, 8, 16]), max_size=4))
    data_type = draw(st.sampled_from(ELEMENT_TYPES))
    values = np.resize(
        np.array(draw(st.lists(st.sampled_from(INTERESTING_FLOATS[:10]), min_size=1, max_size=8))), shape
    )
    if data_type in (TensorProto.FLOAT16, TensorProto.BFLOAT16, TensorProto.INT4):
        return helper.make_tensor(name, data_type, shape, np.nan_to_num(values).reshape(-1).clip(-7, 7).tolist())
    dtype = helper.tensor_dtype_to_np_dtype(data_type)
    with np.errstate(all="ignore"):
        array = values.astype(dtype) if dtype.kind == "f" else np.nan_to_num(values).clip(-100, 100).astype(dtype)
    return numpy_helper.from_array(array, name)


def mutate_graph(draw, model: onnx.ModelProto) -> str:
    graph = model.graph
    tensors = names_in(model)
    kind = draw(
        st.sampled_from(
            [
                "retype op",
                "rename input",
                "rename output",
                "resize weight",
                "retype attribute",
                "drop node",
                "duplicate node",
                "drop attribute",
            ]
        )
    )
    if kind == "resize weight" and graph.initializer:
        index = draw(st.integers(0, len(graph.initializer) - 1))
        graph.initializer[index].CopyFrom(random_tensor(draw, graph.initializer[index].name))
        return kind
    if not graph.node:
        return "nothing"
    node = graph.node[draw(st.integers(0, len(graph.node) - 1))]
    if kind == "retype op":
        node.op_type = draw(st.sampled_from(RELEVANT_OPS))
    elif kind == "rename input" and node.input:
        node.input[draw(st.integers(0, len(node.input) - 1))] = draw(st.sampled_from(tensors + ["", "ghost"]))
    elif kind == "rename output" and node.output:
        node.output[draw(st.integers(0, len(node.output) - 1))] = draw(st.sampled_from(tensors + [""]))
    elif kind == "retype attribute":
        name = draw(st.sampled_from(ATTRIBUTE_NAMES))
        kept = [a for a in node.attribute if a.name != name]
        del node.attribute[:]
        node.attribute.extend(kept + [helper.make_attribute(name, attribute_value(draw))])
    elif kind == "drop node":
        graph.node.remove(node)
    elif kind == "duplicate node":
        graph.node.add().CopyFrom(node)
    elif kind == "drop attribute" and node.attribute:
        del node.attribute[draw(st.integers(0, len(node.attribute) - 1))]
    return kind


@st.composite
def graph_mutants(draw) -> bytes:
    model = onnx.ModelProto()
    model.CopyFrom(SEEDS[draw(st.sampled_from(sorted(SEEDS)))])
    for _ in range(draw(st.integers(1, 4))):
        event(mutate_graph(draw, model))
    return model.SerializeToString()


@settings(
    max_examples=GRAPH_EXAMPLES,
    deadline=None,
    derandomize=RANDOM is None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=graph_mutants())
@seed(int(RANDOM or 0))
def test_graph_mutants_never_crash(folder, data):
    check_mutant(data, folder)


@settings(
    max_examples=PROBE_EXAMPLES,
    deadline=None,
    derandomize=RANDOM is None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=graph_mutants())
@seed(int(RANDOM or 0))
def test_graph_mutants_with_the_probe_never_crash(folder, data):
    check_mutant(data, folder, probe=True)


def test_seeds_are_analysed_cleanly(folder):
    """The seeds themselves load and produce layers: the mutants start from models that work."""
    for name, data in SEED_BYTES.items():
        (folder / "seed.onnx").write_bytes(data)
        result = analyse(str(folder / "seed.onnx"), Config(probe=False))
        assert result.error is None and result.layers, name
