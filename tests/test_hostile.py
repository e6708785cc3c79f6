"""The catalogue of hostile and broken inputs (issue 6): every one ends with a clear outcome.

Each case runs relulint as a user does (a real process, RELULINT_DEBUG unset) and asserts:
- the exit status: 2 for what cannot be analysed, 0/1 where the analysis goes on;
- one line on stderr naming the file and the problem (exit 2), or a note that says what was
  skipped (0/1), on stdout and in the JSON report;
- no traceback, and no internal-error fallback anywhere (an internal error is a defect, not an outcome).
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import resource
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import AttributeProto, TensorProto, helper, numpy_helper

from relulint.modelkit import ModelBuilder, mlp
from relulint.report import write_atomically

# Notes and errors that mean a fallback caught a crash: never an acceptable outcome.
CRASH_MARKERS = ("internal error", "failed on this model", "analysis failed", "Traceback")


@dataclass
class Outcome:
    status: int
    stdout: str
    stderr: str
    report: dict | None  # the JSON report written with -o, when there is one

    def models(self) -> list[dict]:
        return self.report["models"] if self.report else []

    def notes(self) -> list[str]:
        return [note["message"] for model in self.models() for note in model["notes"]]


def lint(*args: str, report: Path | None = None, probe: bool = False, memory_limit: int | None = None) -> Outcome:
    """Run ``python -m relulint`` with a JSON report in ``report`` (text still goes to stdout)."""
    environment = dict(os.environ)
    environment.pop("RELULINT_DEBUG", None)  # the user's behaviour: internal errors would be caught
    command = [sys.executable, "-m", "relulint", *args]
    if not probe:
        command.append("--no-probe")
    if report is not None:
        command += ["-o", str(report)]

    def limit() -> None:  # an allocation the size a hostile header declares fails instead of swapping
        resource.setrlimit(resource.RLIMIT_AS, (memory_limit, memory_limit))

    done = subprocess.run(
        command,
        capture_output=True,
        text=True,
        env=environment,
        timeout=600,
        preexec_fn=limit if memory_limit else None,
    )
    parsed = json.loads(report.read_text()) if report is not None and report.exists() else None
    outcome = Outcome(done.returncode, done.stdout, done.stderr, parsed)
    assert_no_crash(outcome)
    return outcome


def assert_no_crash(outcome: Outcome) -> None:
    assert outcome.status in (0, 1, 2), f"exit status {outcome.status} (a signal?)\n{outcome.stderr[-2000:]}"
    for marker in CRASH_MARKERS:
        assert marker not in outcome.stdout + outcome.stderr, outcome.stdout[-3000:] + outcome.stderr[-3000:]
    for model in outcome.models():
        assert not any(marker in (model.get("error") or "") for marker in CRASH_MARKERS), model["error"]
        for note in model["notes"]:
            assert not any(marker in note["message"] for marker in CRASH_MARKERS), note["message"]


def expect_error(outcome: Outcome, path: str | Path, pattern: str) -> None:
    """Exit 2 with exactly one stderr line: ``relulint: error: PATH: problem``."""
    assert outcome.status == 2, outcome.stdout + outcome.stderr
    lines = outcome.stderr.splitlines()
    assert len(lines) == 1, outcome.stderr
    prefix = f"relulint: error: {path}: "
    assert lines[0].startswith(prefix), lines[0]
    assert re.search(pattern, lines[0][len(prefix) :]), lines[0]


def expect_note(outcome: Outcome, path: str | Path, pattern: str) -> None:
    """Exit 0 or 1, nothing on stderr, and a note matching ``pattern`` on stdout and in the JSON."""
    assert outcome.status in (0, 1), outcome.stdout + outcome.stderr
    assert outcome.stderr == ""
    shown = [line for line in outcome.stdout.splitlines() if line.startswith(f"{path}:") and " note: " in line]
    assert any(re.search(pattern, line) for line in shown), outcome.stdout[-3000:]
    assert any(re.search(pattern, note) for note in outcome.notes()), outcome.notes()


def expect_analysed(outcome: Outcome) -> dict:
    """Exit 0 or 1, nothing on stderr, one analysed model; returns its JSON."""
    assert outcome.status in (0, 1), outcome.stdout + outcome.stderr
    assert outcome.stderr == ""
    [model] = outcome.models()
    assert "error" not in model
    return model


# ---- models ---------------------------------------------------------------------------------------
def small_mlp(bias: float = 0.0, seed: int = 0) -> onnx.ModelProto:
    b = ModelBuilder(seed=seed)
    x = b.input("x", [1, 8])
    return b.build([mlp(b, x, [8, 16, 16, 4], bias_value=bias)])


def save(model: onnx.ModelProto, path: Path) -> Path:
    path.write_bytes(model.SerializeToString())
    return path


def weights(model: onnx.ModelProto) -> list[TensorProto]:
    """The Gemm weight matrices (2-D initializers)."""
    return [t for t in model.graph.initializer if len(t.dims) == 2]


def replace_array(tensor: TensorProto, array: np.ndarray) -> None:
    tensor.CopyFrom(numpy_helper.from_array(array, tensor.name))


def save_external(model: onnx.ModelProto, folder: Path) -> Path:
    path = folder / "model.onnx"
    onnx.save(
        model, path, save_as_external_data=True, all_tensors_to_one_file=True, location="weights.bin", size_threshold=0
    )
    return path


def set_external(path: Path, **entries: str) -> None:
    """Rewrite external-data entries (location, length, offset) of every external tensor."""
    model = onnx.load(path, load_external_data=False)
    for tensor in model.graph.initializer:
        for entry in tensor.external_data:
            if entry.key in entries:
                entry.value = entries[entry.key]
        for key, value in entries.items():
            if key not in {e.key for e in tensor.external_data}:
                added = tensor.external_data.add()
                added.key, added.value = key, value
    onnx.save(model, path)


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        low, value = value & 0x7F, value >> 7
        out.append(low | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def nested_if_model(depth: int, padding: int = 0) -> bytes:
    """``If`` nodes nested ``depth`` deep, a Relu at the bottom, written as wire bytes: Python's protobuf
    cannot build (or parse) a message this deep with its default limit."""
    value = helper.make_tensor_value_info("o", TensorProto.FLOAT, [1])
    leaf = helper.make_graph([helper.make_node("Relu", ["v"], ["o"], name="relu")], "leaf", [], [value])
    else_attribute = helper.make_attribute("else_branch", leaf).SerializeToString()
    inner = leaf.SerializeToString()
    for level in range(depth):
        then_attribute = AttributeProto(name="then_branch", type=AttributeProto.GRAPH).SerializeToString() + _field(
            6, inner
        )
        node = onnx.NodeProto(op_type="If", name=f"If_{level}", input=["c"], output=["o"]).SerializeToString()
        node += _field(5, then_attribute) + _field(5, else_attribute)  # NodeProto.attribute = 5
        outputs = _field(12, value.SerializeToString()) if level < depth - 1 else b""  # GraphProto.output = 12
        inner = _field(1, node) + onnx.GraphProto(name=f"g{level}").SerializeToString() + outputs
    main = onnx.GraphProto(
        input=[
            helper.make_tensor_value_info("c", TensorProto.BOOL, []),
            helper.make_tensor_value_info("v", TensorProto.FLOAT, [1]),
        ],
        output=[value],
        initializer=[numpy_helper.from_array(np.zeros(padding // 4, np.float32), "padding")] if padding else [],
    )
    model = helper.make_model(onnx.GraphProto(), opset_imports=[helper.make_opsetid("", 17)])
    model.ClearField("graph")
    return model.SerializeToString() + _field(7, inner + main.SerializeToString())  # ModelProto.graph = 7


def hostile_names_model() -> onnx.ModelProto:
    """A dying MLP whose node and tensor names carry control characters, markup and path climbing."""
    b = ModelBuilder(seed=1)
    x = b.input("x\x1b[31m", [1, 8])
    names = ["fc1\x1b[2J\x07\r\nFAKE: line", "fc2<script>alert(1)</script>", "fc3/../../../etc/passwd"]
    y = x
    for index, name in enumerate(names):
        fan_in = 8 if index == 0 else 16
        y = b.relu(b.gemm(y, fan_in, 16, bias=np.full(16, -4.0, np.float32), name=name), name + "_relu")
    return b.build([b.gemm(y, 16, 2, name="out,%0A::error::x")])


# ---- files that are not models (exit 2) ------------------------------------------------------------
def test_empty_file(tmp_path):
    path = tmp_path / "empty.onnx"
    path.write_bytes(b"")
    expect_error(lint(str(path)), path, r"^file is empty, not an ONNX model$")


def test_truncated_protobuf(tmp_path):
    data = small_mlp().SerializeToString()
    path = tmp_path / "truncated.onnx"
    path.write_bytes(data[: len(data) * 2 // 3])
    expect_error(lint(str(path)), path, r"^not an ONNX model: protobuf parsing failed")


def test_random_bytes(tmp_path):
    path = tmp_path / "random.onnx"
    path.write_bytes(np.random.default_rng(6).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    expect_error(lint(str(path)), path, r"^not an ONNX model")


def test_text_file_named_onnx(tmp_path):
    path = tmp_path / "readme.onnx"
    path.write_text("This is not a model.\nIt is a text file that happens to end in .onnx.\n")
    expect_error(lint(str(path)), path, r"^not an ONNX model")


def test_json_file_named_onnx(tmp_path):
    path = tmp_path / "config.onnx"
    path.write_text(json.dumps({"graph": {"node": [{"op_type": "Relu"}]}, "opset": 17}))
    expect_error(lint(str(path)), path, r"^not an ONNX model")


def test_protobuf_without_a_graph(tmp_path):
    path = tmp_path / "nograph.onnx"
    path.write_bytes(onnx.ModelProto(ir_version=8, producer_name="x").SerializeToString())
    expect_error(lint(str(path)), path, r"^not an ONNX model: it has no graph$")


def test_folder_with_no_models(tmp_path):
    folder = tmp_path / "models"
    (folder / "sub").mkdir(parents=True)
    (folder / "notes.txt").write_text("no models here")
    expect_error(lint(str(folder)), folder, r"^folder holds no \.onnx files$")


def test_missing_file(tmp_path):
    path = tmp_path / "absent.onnx"
    expect_error(lint(str(path)), path, r"^no such file$")


def test_dangling_symlink(tmp_path):
    path = tmp_path / "link.onnx"
    os.symlink(tmp_path / "gone.onnx", path)
    expect_error(lint(str(path)), path, r"^is a symbolic link to a file that does not exist$")


def test_unreadable_file(tmp_path):
    if os.geteuid() == 0:
        pytest.skip(
            "running as root: chmod 000 does not stop root from reading (the dangling-symlink case covers an unreadable path)"
        )
    path = save(small_mlp(), tmp_path / "locked.onnx")
    path.chmod(0)
    expect_error(lint(str(path)), path, r"^permission denied$")


def test_named_pipe_does_not_block(tmp_path):
    path = tmp_path / "pipe.onnx"
    os.mkfifo(path)  # reading it would wait for a writer forever
    expect_error(lint(str(path)), path, r"^is not a regular file \(a named pipe\)")


def test_endless_device_is_not_read():
    expect_error(lint("/dev/zero"), "/dev/zero", r"^is not a regular file \(a character device\)")


def test_file_name_with_a_line_break_stays_on_one_line(tmp_path):
    path = tmp_path / "two\nlines\x1b[31m.onnx"
    path.write_bytes(b"\x00\x01garbage")
    outcome = lint(str(path))
    expect_error(outcome, str(path).replace("\n", "\\n").replace("\x1b", "\\x1b"), r"^not an ONNX model")


def test_model_over_the_size_limit(tmp_path):
    path = save(small_mlp(), tmp_path / "big.onnx")
    expect_error(
        lint(str(path), "--max-model-size", "1KB"), path, r"bytes, over the 1,024-byte limit \(--max-model-size\)$"
    )


# ---- external data -------------------------------------------------------------------------------
def test_external_data_file_missing(tmp_path):
    path = save_external(small_mlp(), tmp_path)
    (tmp_path / "weights.bin").unlink()
    outcome = lint(str(path), report=tmp_path / "r.json")
    expect_note(
        outcome,
        path,
        r"external data of tensor 'w_0' \(weights\.bin\) is missing; statistics of that tensor are skipped",
    )


def test_external_data_at_an_absolute_path(tmp_path):
    path = save_external(small_mlp(), tmp_path)
    set_external(path, location="/etc/passwd")
    expect_error(lint(str(path)), path, r"external data of tensor 'w_0' has the absolute location '/etc/passwd'")


def test_external_data_climbing_out_with_dotdot(tmp_path):
    (tmp_path / "inner").mkdir()
    path = save_external(small_mlp(), tmp_path / "inner")
    set_external(path, location="../weights.bin")
    expect_error(
        lint(str(path)), path, r"external data of tensor 'w_0' at '\.\./weights\.bin' climbs out of the model's folder$"
    )


def test_external_data_leaving_through_a_symlink(tmp_path):
    (tmp_path / "inner").mkdir()
    path = save_external(small_mlp(), tmp_path / "inner")
    (tmp_path / "inner" / "weights.bin").rename(tmp_path / "outside.bin")
    os.symlink(tmp_path / "outside.bin", tmp_path / "inner" / "weights.bin")
    expect_error(lint(str(path)), path, r"at 'weights\.bin' leaves the model's folder through a symbolic link$")


def test_external_data_of_the_wrong_declared_length(tmp_path):
    path = save_external(small_mlp(), tmp_path)
    set_external(path, length="12")
    outcome = lint(str(path), report=tmp_path / "r.json")
    expect_note(
        outcome, path, r"external data of tensor 'w_0' \(weights\.bin\) declares 12 bytes but its shape needs 512"
    )


def test_external_data_file_too_short(tmp_path):
    path = save_external(small_mlp(), tmp_path)
    with open(tmp_path / "weights.bin", "r+b") as stream:
        stream.truncate(100)
    outcome = lint(str(path), report=tmp_path / "r.json")
    expect_note(
        outcome, path, r"external data of tensor 'w_0' \(weights\.bin\) needs bytes 0\.\.512 but the file has 100"
    )


TRUNCATE_AFTER_LOADING = """
import os, sys
from relulint import engine
from relulint.launch import main

build_graph = engine.build_graph
data = sys.argv[1]


def truncating(loaded):  # the file shrinks after the loader checked it, before its weights are read
    os.truncate(data, 100)
    return build_graph(loaded)


engine.build_graph = truncating
sys.argv = ["relulint", "--no-probe", sys.argv[2]]
main()
"""


def test_external_data_truncated_after_loading(tmp_path):
    """Reading a memory map of a file that shrank kills the process with SIGBUS; read() just comes up short."""
    path = save_external(small_mlp(), tmp_path)
    environment = {key: value for key, value in os.environ.items() if key != "RELULINT_DEBUG"}
    done = subprocess.run(
        [sys.executable, "-c", TRUNCATE_AFTER_LOADING, str(tmp_path / "weights.bin"), str(path)],
        capture_output=True,
        text=True,
        env=environment,
        timeout=300,
    )
    outcome = Outcome(done.returncode, done.stdout, done.stderr, None)
    assert_no_crash(outcome)
    expect_error(
        outcome,
        path,
        r"^the external data file 'weights\.bin' was truncated while relulint read it: it has 100 bytes, "
        r"tensor 'w_0' needs bytes 0\.\.512$",
    )


def test_external_data_truncated_between_two_blocks(tmp_path):
    from relulint.errors import ModelError
    from relulint.loader import load_model
    from relulint.tensors import row_blocks

    path = save_external(small_mlp(), tmp_path)
    loaded = load_model(path)
    [weight] = [t for t in loaded.model.graph.initializer if t.name == "w_2"]  # 16 x 16 floats, at 576..1600
    blocks = row_blocks(weight, loaded, 16, block_bytes=4 * 16 * 4)  # four rows a block
    first = next(blocks)
    np.testing.assert_array_equal(first, numpy_helper.to_array(weights(small_mlp())[1])[:4])
    os.truncate(tmp_path / "weights.bin", 1000)
    with pytest.raises(ModelError, match=r"was truncated while relulint read it: it has 1,000 bytes"):
        list(blocks)


def test_block_readers_alive_at_once_never_share_a_buffer(tmp_path):
    """Read buffers are reused from one tensor to the next (fresh memory costs a page fault per 4 KB), but
    two readers interleaved each fill their own."""
    from relulint.loader import load_model
    from relulint.tensors import row_blocks

    path = save_external(small_mlp(), tmp_path)
    loaded = load_model(path)
    stored = {t.name: t for t in loaded.model.graph.initializer}
    expected = {t.name: numpy_helper.to_array(t).reshape(t.dims[0], -1) for t in weights(small_mlp())}
    one, other = sorted(expected, key=lambda name: -expected[name].size)[:2]

    def blocks(name: str):
        return row_blocks(stored[name], loaded, expected[name].shape[0], block_bytes=2 * 16 * 4)  # two rows

    done = {one: 0, other: 0}
    for a, b in zip(blocks(one), blocks(other)):  # interleaved: both blocks checked before either moves on
        assert not np.shares_memory(a, b)
        for name, block in ((one, a), (other, b)):
            np.testing.assert_array_equal(block, expected[name][done[name] : done[name] + len(block)])
            done[name] += len(block)
    first = next(blocks(one)).copy()
    later = next(blocks(one))  # the buffer of a finished reader is reused: same values read again
    np.testing.assert_array_equal(later, first)


def test_external_data_replaced_after_loading(tmp_path):
    from relulint.errors import ModelError
    from relulint.loader import load_model
    from relulint.tensors import read_tensor

    path = save_external(small_mlp(), tmp_path)
    loaded = load_model(path)
    (tmp_path / "other.bin").write_bytes((tmp_path / "weights.bin").read_bytes())
    os.replace(tmp_path / "other.bin", tmp_path / "weights.bin")
    with pytest.raises(ModelError, match=r"the external data file 'weights\.bin' was replaced by another file"):
        read_tensor(loaded.model.graph.initializer[0], loaded)


def test_external_data_that_is_a_named_pipe(tmp_path):
    path = save_external(small_mlp(), tmp_path)
    (tmp_path / "weights.bin").unlink()
    os.mkfifo(tmp_path / "weights.bin")
    outcome = lint(str(path), report=tmp_path / "r.json")
    expect_note(outcome, path, r"\(weights\.bin\) is not a regular file")


def test_external_data_inside_a_model_local_function(tmp_path):
    """A Constant in a function body pointing at /etc/passwd: checked like every other tensor."""
    secret = TensorProto(name="secret", data_type=TensorProto.FLOAT, dims=[4], data_location=TensorProto.EXTERNAL)
    entry = secret.external_data.add()
    entry.key, entry.value = "location", "/etc/passwd"
    body = [
        helper.make_node("Constant", [], ["w"], value=secret),
        helper.make_node("Add", ["x", "w"], ["y"]),
    ]
    opsets = [helper.make_opsetid("", 17), helper.make_opsetid("local", 1)]
    function = helper.make_function("local", "AddSecret", ["x"], ["y"], body, opsets)
    graph = helper.make_graph(
        [
            helper.make_node("AddSecret", ["x"], ["h"], domain="local", name="call"),
            helper.make_node("Relu", ["h"], ["y"], name="act"),
        ],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])],
    )
    path = save(helper.make_model(graph, opset_imports=opsets, functions=[function]), tmp_path / "fn.onnx")
    expect_error(lint(str(path)), path, r"external data of tensor 'secret' has the absolute location '/etc/passwd'")


# ---- graphs that break the rules of ONNX (analysis goes on, with a note) --------------------------
def test_graph_with_a_cycle(tmp_path):
    model = small_mlp(bias=-4.0)
    model.graph.node[0].input[0] = model.graph.node[3].output[0]  # fc1 reads fc2_relu's output
    path = save(model, tmp_path / "cycle.onnx")
    outcome = lint(str(path), report=tmp_path / "r.json")
    expect_note(
        outcome,
        path,
        r"the graph has a cycle \(.*\); the edges that close cycles \('fc2_relu_out' into 'fc1'\) are cut",
    )


def test_node_reading_its_own_output(tmp_path):
    model = small_mlp(bias=-4.0)
    model.graph.node[0].input[0] = model.graph.node[0].output[0]
    path = save(model, tmp_path / "selfloop.onnx")
    outcome = lint(str(path), report=tmp_path / "r.json")
    expect_note(
        outcome, path, r"the graph has a cycle \(fc1 -> …\); the edges that close cycles \('fc1_out' into 'fc1'\)"
    )


def test_two_nodes_writing_one_tensor(tmp_path):
    model = small_mlp()
    model.graph.node[2].output[0] = model.graph.node[0].output[0]
    path = save(model, tmp_path / "twowriters.onnx")
    outcome = lint(str(path), report=tmp_path / "r.json")
    expect_note(outcome, path, r"tensor 'fc1_out' is written by more than one node; the first writer is used")


def test_node_input_nobody_produces(tmp_path):
    model = small_mlp()
    model.graph.node[2].input[0] = "ghost"
    path = save(model, tmp_path / "dangling.onnx")
    outcome = lint(str(path), report=tmp_path / "r.json")
    expect_note(outcome, path, r"tensor 'ghost' is used but produced by no node, input or initializer")


def test_unknown_op_domain(tmp_path):
    model = small_mlp()
    model.graph.node[1].domain = "com.example.secret"
    model.graph.node[1].op_type = "MysteryActivation"
    path = save(model, tmp_path / "domain.onnx")
    outcome = lint(str(path), report=tmp_path / "r.json")
    expect_note(outcome, path, r"onnx checker: .*com\.example\.secret")


def test_opset_newer_than_onnx_knows(tmp_path):
    model = small_mlp()
    model.opset_import[0].version = onnx.defs.onnx_opset_version() + 50
    path = save(model, tmp_path / "future.onnx")
    outcome = lint(str(path), report=tmp_path / "r.json")
    expect_note(outcome, path, rf"opset {onnx.defs.onnx_opset_version() + 50} is newer than the \d+ this onnx knows")


def test_attributes_of_the_wrong_type(tmp_path):
    b = ModelBuilder(seed=2)
    x = b.input("x", [1, 4, 8, 8])
    w = b.const(b.he([8, 4, 3, 3], 36))
    y = b.node("Conv", [x, w], "conv", group="two", kernel_shape=[3, 3], pads=[1, 1, 1, 1])
    z = b.relu(b.node("Gemm", [b.node("Flatten", [y]), b.const(b.he([512, 4], 512))], "fc", alpha="x", transB=[1]))
    path = save(b.build([z], [[1, 4]]), tmp_path / "attrs.onnx")
    outcome = lint(str(path), report=tmp_path / "r.json")
    expect_note(outcome, path, r"onnx checker: .*(group|alpha|transB)")
    assert [unit["units"] for unit in outcome.models()[0]["units"]] == [4]  # transB read as its default 0


def test_constant_chain_with_diamonds_does_not_explode(tmp_path):
    """64 Reshape nodes each reading the previous one twice: 2**64 paths, walked once each."""
    b = ModelBuilder()
    x = b.input("x", [1, 4])
    t = b.const(np.array([4, 4], np.int64), "shape")
    for index in range(64):
        t = b.node("Reshape", [t, t], f"r{index}")
    y = b.relu(b.node("MatMul", [x, b.node("Cast", [t], "cast", to=TensorProto.FLOAT)], "mm"), "act")
    path = save(b.build([y], [[1, 4]]), tmp_path / "diamonds.onnx")
    model = expect_analysed(lint(str(path), report=tmp_path / "r.json"))
    assert len(model["units"]) == 1


def test_residual_join_of_thousands_of_operands(tmp_path):
    b = ModelBuilder()
    x = b.input("x", [1, 4])
    branches = []
    for index in range(6):
        h = b.gemm(x, 4, 4, name=f"g{index}")
        branches.append(b.node("Sum", [h] * 300, f"s{index}"))
    y = b.relu(b.node("Sum", branches * 100, "join"), "act")
    path = save(b.build([y]), tmp_path / "sum.onnx")
    model = expect_analysed(lint(str(path), report=tmp_path / "r.json"))
    assert model["units"][0]["residual"] is True


def test_subgraphs_nested_100_deep(tmp_path):
    path = tmp_path / "nested.onnx"
    path.write_bytes(nested_if_model(100))
    outcome = lint(str(path), report=tmp_path / "r.json")
    expect_note(outcome, path, r"its messages are nested 30\d deep \(subgraphs in subgraphs\), deeper than the 100")
    units = outcome.models()[0]["units"]
    assert len(units) == 101 and max(unit["name"].count("/then/") for unit in units) == 100


def test_subgraphs_nested_too_deep_to_parse_safely(tmp_path):
    path = tmp_path / "abyss.onnx"
    path.write_bytes(nested_if_model(3000))  # the parser would overflow the C stack: refused, no crash
    expect_error(
        lint(str(path)), path, r"nested more than 400 deep \(subgraphs in subgraphs\); relulint refuses to parse it"
    )


def test_subgraphs_nested_deep_in_a_large_file(tmp_path):
    path = tmp_path / "deep_and_large.onnx"
    path.write_bytes(nested_if_model(40, padding=17 * 1024**2))  # measuring its depth would take too long
    expect_error(
        lint(str(path)), path, r"nested more than 100 deep \(subgraphs in subgraphs\) and the file is over 16 MB"
    )


def test_graph_of_100000_nodes_finishes(tmp_path):
    b = ModelBuilder(seed=5)
    x = b.input("x", [1, 4])
    w = b.const(b.he([4, 4], 4), "W")
    c = b.const(np.full(4, 0.1, np.float32), "B")
    y = x
    for index in range(25_000):
        y = b.node("Relu", [b.node("Add", [b.node("MatMul", [y, w], f"mm{index}"), c], f"add{index}")], f"act{index}")
        y = b.node("Identity", [y], f"id{index}")
    path = save(b.build([y], [[1, 4]]), tmp_path / "huge.onnx")
    model = expect_analysed(lint(str(path), report=tmp_path / "r.json"))
    assert model["nodes"] == 100_000 and len(model["units"]) == 25_000


# ---- weights and tensors -------------------------------------------------------------------------
def test_nan_and_inf_weights(tmp_path):
    model = small_mlp()
    w = numpy_helper.to_array(weights(model)[0]).copy()
    w[0, 0], w[1, 1], w[2, 2] = np.nan, np.inf, -np.inf
    replace_array(weights(model)[0], w)
    path = save(model, tmp_path / "nan.onnx")
    model_json = expect_analysed(lint(str(path), report=tmp_path / "r.json"))
    assert model_json["units"][0]["metrics"]["nonfinite_weights"] == 3


def test_weights_near_the_float64_limit(tmp_path):
    """Squares of such weights overflow: the statistics stay numbers and no warning reaches stderr."""
    b = ModelBuilder()
    x = b.input("x", [1, 4], TensorProto.DOUBLE)
    w = np.array([[1e300, -1e308, 2.0, 0.0]] * 3, np.float64)
    y = b.relu(b.node("Gemm", [x, b.const(w, "W"), b.const(np.zeros(3), "B")], "fc", transB=1), "act")
    model = b.build([y], [[1, 3]])
    model.graph.output[0].type.tensor_type.elem_type = TensorProto.DOUBLE
    path = save(model, tmp_path / "huge_values.onnx")
    metrics = expect_analysed(lint(str(path), report=tmp_path / "r.json"))["units"][0]["metrics"]
    assert metrics["weight_min"] == -1e308 and metrics["weight_std"] > 1e307 and metrics["nonfinite_weights"] == 0


def test_denormal_weights(tmp_path):
    model = small_mlp()
    for tensor in weights(model):
        replace_array(tensor, np.full(tuple(tensor.dims), 1e-42, np.float32))
    path = save(model, tmp_path / "denormal.onnx")
    model_json = expect_analysed(lint(str(path), report=tmp_path / "r.json"))
    assert (
        0 < model_json["units"][0]["metrics"]["weight_std"] + model_json["units"][0]["metrics"]["weight_mean"] < 1e-40
    )


def test_zero_size_weight(tmp_path):
    model = small_mlp()
    replace_array(weights(model)[1], np.zeros((0, 16), np.float32))  # fc2 has no units
    replace_array(model.graph.initializer[3], np.zeros(0, np.float32))
    path = save(model, tmp_path / "zerosize.onnx")
    model_json = expect_analysed(lint(str(path), report=tmp_path / "r.json"))
    assert model_json["units"][1]["units"] == 0


def test_zero_dimensional_weight_and_bias(tmp_path):
    model = small_mlp()
    replace_array(weights(model)[0], np.array(0.5, np.float32))
    replace_array(model.graph.initializer[3], np.array(-1.0, np.float32))
    path = save(model, tmp_path / "scalar.onnx")
    expect_analysed(lint(str(path), report=tmp_path / "r.json"))


@pytest.mark.parametrize("dtype", [np.int8, np.uint8])
def test_quantized_weights(tmp_path, dtype):
    b = ModelBuilder(seed=4)
    x = b.input("x", [1, 8])
    q = b.const(np.random.default_rng(0).integers(0, 100, (16, 8)).astype(dtype), "Wq")
    w = b.node(
        "DequantizeLinear",
        [q, b.const(np.float32(0.02), "s"), b.const(dtype(50 if dtype == np.uint8 else 0), "z")],
        "dq",
    )
    y = b.relu(b.node("Gemm", [x, w, b.const(np.zeros(16, np.float32))], "fc", transB=1), "act")
    path = save(b.build([y]), tmp_path / f"{np.dtype(dtype).name}.onnx")
    model = expect_analysed(lint(str(path), report=tmp_path / "r.json"))
    assert model["units"][0]["weight"] == "dq_out" and "weight_std" in model["units"][0]["metrics"]


@pytest.mark.parametrize("data_type", [TensorProto.FLOAT16, TensorProto.BFLOAT16])
def test_half_precision_weights(tmp_path, data_type):
    model = small_mlp()
    for tensor in model.graph.initializer:
        array = numpy_helper.to_array(tensor)
        tensor.CopyFrom(helper.make_tensor(tensor.name, data_type, array.shape, array.reshape(-1).tolist()))
    path = save(model, tmp_path / "half.onnx")
    model_json = expect_analysed(lint(str(path), report=tmp_path / "r.json"))
    assert 0.2 < model_json["units"][0]["metrics"]["he_ratio"] < 5


def test_negative_dimensions(tmp_path):
    model = small_mlp()
    weights(model)[0].dims[0] = -16
    path = save(model, tmp_path / "negative.onnx")
    outcome = lint(str(path), report=tmp_path / "r.json")
    expect_note(outcome, path, r"tensor 'w_0' has the negative dimensions \[-16, 8\]")


def test_declared_dims_of_ten_to_the_twelfth_in_a_weight(tmp_path):
    model = small_mlp()
    weights(model)[0].dims[0] = 10**12  # the bytes stay those of 16 rows
    path = save(model, tmp_path / "hugedims.onnx")
    outcome = lint(str(path), report=tmp_path / "r.json", memory_limit=8 * 1024**3)
    expect_note(
        outcome, path, r"tensor 'w_0' has 512 bytes of data but its dims \[1000000000000, 8\] need 32000000000000"
    )


def test_raw_data_of_the_wrong_length(tmp_path):
    model = small_mlp()
    weights(model)[0].raw_data = weights(model)[0].raw_data[:-3]
    path = save(model, tmp_path / "short.onnx")
    outcome = lint(str(path), report=tmp_path / "r.json")
    expect_note(outcome, path, r"tensor 'w_0' has 509 bytes of data but its dims \[16, 8\] need 512")


def test_unknown_element_type(tmp_path):
    model = small_mlp()
    weights(model)[0].data_type = 999
    path = save(model, tmp_path / "type999.onnx")
    outcome = lint(str(path), report=tmp_path / "r.json")
    expect_note(outcome, path, r"tensor 'w_0' has the unknown element type 999")


def test_string_weights(tmp_path):
    model = small_mlp()
    tensor = weights(model)[0]
    tensor.CopyFrom(helper.make_tensor(tensor.name, TensorProto.STRING, list(tensor.dims), [b"w"] * 128))
    path = save(model, tmp_path / "strings.onnx")
    outcome = lint(str(path), report=tmp_path / "r.json")
    expect_note(outcome, path, r"tensor 'w_0' holds no numbers")


# ---- the probe (onnxruntime) ---------------------------------------------------------------------
def _probe_available() -> None:
    from relulint.rules import all_rules

    if not any("probe" in rule.meta.needs for rule in all_rules()):
        pytest.skip("no rule asks for the probe in this checkout yet, so the probe never runs")


def test_declared_input_dims_of_ten_to_the_twelfth(tmp_path):
    _probe_available()
    b = ModelBuilder()
    x = b.input("x", [10**6, 10**6])  # 10**12 elements: the probe must refuse before allocating
    y = b.relu(b.gemm(x, 10**6, 1, weight=np.ones((1, 10**6), np.float32), name="fc"), "act")
    path = save(b.build([y], [[10**6, 1]]), tmp_path / "hugeinput.onnx")
    outcome = lint(str(path), report=tmp_path / "r.json", probe=True, memory_limit=8 * 1024**3)
    expect_note(outcome, path, r"the probe did not run: .*--probe-memory")


def test_model_that_onnxruntime_refuses_to_load(tmp_path):
    _probe_available()
    model = small_mlp()
    weights(model)[1].CopyFrom(
        numpy_helper.from_array(numpy_helper.to_array(weights(model)[1]).astype(np.float64), "w_2")
    )
    path = save(model, tmp_path / "mixedtypes.onnx")  # Gemm(float, double): no session can be created
    outcome = lint(str(path), report=tmp_path / "r.json", probe=True)
    expect_note(outcome, path, r"the probe did not run: onnxruntime cannot load")


def test_probe_memory_limit_from_the_option(tmp_path):
    _probe_available()
    b = ModelBuilder(seed=3)
    x = b.input("x", [1, 3, 64, 64])  # 48 KB per sample before any activation
    y = b.relu(b.conv(x, 3, 8, name="conv"), "act")
    path = save(b.build([y]), tmp_path / "conv.onnx")
    outcome = lint(str(path), "--probe-memory", "16KB", report=tmp_path / "r.json", probe=True)
    expect_note(outcome, path, r"the probe did not run: one sample needs more than the .* --probe-memory allows")


@pytest.mark.parametrize("option", ["--max-model-size", "--probe-memory"])
def test_limits_with_nonsense_values(tmp_path, option):
    path = save(small_mlp(), tmp_path / "m.onnx")
    outcome = lint(str(path), option, "lots")
    assert outcome.status == 2 and len(outcome.stderr.splitlines()) == 1
    assert outcome.stderr.startswith("relulint: error: ") and option.lstrip("-").replace(
        "-", ""
    ) in outcome.stderr.replace("-", "").replace("_", "")


def test_if_without_its_else_branch_with_the_probe(tmp_path):
    """Found by the fuzz test with the probe on (RELULINT_FUZZ_SEED=5)."""
    _probe_available()
    w = numpy_helper.from_array(np.eye(4, dtype=np.float32), "w")
    then_graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["h"], name="mm"), helper.make_node("Relu", ["h"], ["y"], name="act")],
        "then",
        [],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
        [w],
    )
    graph = helper.make_graph(
        [helper.make_node("If", ["cond"], ["out"], name="if", then_branch=then_graph)],
        "g",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4]),
            helper.make_tensor_value_info("cond", TensorProto.BOOL, []),
        ],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, 4])],
    )
    path = save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), tmp_path / "halfif.onnx")
    outcome = lint(str(path), report=tmp_path / "r.json", probe=True)
    expect_note(outcome, path, r"onnx checker: .*else_branch")


# ---- hostile names in every output format --------------------------------------------------------
FORMATS = ["text", "json", "sarif", "github", "html"]
HOSTILE_RAW = ("\x1b[2J", "\x07", "\r\nFAKE", "<script>")


@pytest.mark.parametrize("fmt", FORMATS)
def test_hostile_names_are_escaped(tmp_path, fmt):
    if importlib.util.find_spec(f"relulint.report.{fmt}") is None:
        pytest.skip(f"the {fmt} format is not in this checkout yet")
    path = save(hostile_names_model(), tmp_path / "names.onnx")
    outcome = lint(str(path), "--format", fmt, "--fail-on", "error", "--sarif-root", str(tmp_path))
    assert outcome.status == 1 and outcome.stderr == ""
    text = outcome.stdout
    assert "fc2" in text  # the findings are there
    for raw in HOSTILE_RAW[:3]:
        assert raw not in text, f"{raw!r} reached the {fmt} output unescaped"
    if fmt == "html":
        assert "<script>alert" not in text and "&lt;script&gt;alert(1)&lt;/script&gt;" in text
    if fmt in ("json", "sarif"):
        assert "fc1\x1b[2J\x07\r\nFAKE: line_relu" in text_values(json.loads(text))  # JSON escaping, exact names
    if fmt in ("text", "github"):
        assert all(line.startswith(("::", str(path))) or not line.startswith("FAKE") for line in text.splitlines())
        assert "fc1\\x1b[2J\\x07" in text
    assert not (tmp_path.parent / "etc").exists()


def text_values(value: object) -> str:
    """Every string in a parsed JSON document, joined (names sit inside longer messages)."""
    if isinstance(value, dict):
        return "\n".join(text_values(v) for v in value.values())
    if isinstance(value, list):
        return "\n".join(text_values(v) for v in value)
    return value if isinstance(value, str) else ""


def test_names_that_are_not_utf8(tmp_path):
    """protobuf hands invalid UTF-8 out as bytes: found by the fuzz test, once a crash in every report."""
    data = small_mlp(bias=-4.0).SerializeToString().replace(b"fc1_relu", b"fc1_\xff\xfelu")  # same length
    path = tmp_path / "latin.onnx"
    path.write_bytes(data)
    outcome = lint(str(path), report=tmp_path / "r.json")
    expect_note(outcome, path, r"\d+ names or texts are not valid UTF-8; they are shown with U\+FFFD in their place")
    assert "fc1_\ufffd\ufffdlu" in [unit["name"] for unit in outcome.models()[0]["units"]]


# ---- output safety -------------------------------------------------------------------------------
def test_report_onto_the_input_model_is_refused(tmp_path):
    path = save(small_mlp(), tmp_path / "model.onnx")
    before = path.read_bytes()
    outcome = lint(str(path), "--format", "json", "-o", str(path))
    assert (
        outcome.status == 2
        and outcome.stderr.strip() == f"relulint: error: {path}: refusing to overwrite an input model with a report"
    )
    assert path.read_bytes() == before


def test_report_into_a_missing_folder(tmp_path):
    path = save(small_mlp(), tmp_path / "model.onnx")
    target = tmp_path / "no" / "such" / "report.json"
    outcome = lint(str(path), "-o", str(target))
    assert outcome.status == 2
    assert (
        outcome.stderr.strip()
        == f"relulint: error: {target}: cannot write the report: folder '{target.parent}' does not exist"
    )


def test_report_onto_a_folder(tmp_path):
    path = save(small_mlp(), tmp_path / "model.onnx")
    (tmp_path / "out.json").mkdir()
    outcome = lint(str(path), "-o", str(tmp_path / "out.json"))
    assert outcome.status == 2 and outcome.stderr.strip().endswith("is a folder; give a file name for the report")


def test_reports_are_written_atomically(tmp_path):
    target = tmp_path / "report.json"
    target.write_text("previous report\n")
    with pytest.raises(UnicodeEncodeError):  # the write fails half-way: a lone surrogate cannot be encoded
        write_atomically(target, "x" * 100_000 + "\ud800")
    assert target.read_text() == "previous report\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.json"]  # no temporary file left
    path = save(small_mlp(), tmp_path / "model.onnx")
    outcome = lint(str(path), report=target)
    assert outcome.status == 0 and outcome.report["models"][0]["path"] == str(path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx", "report.json"]


# ---- issue 15: the probe's child dying of memory, whichever way it says so ----------------------
@pytest.mark.parametrize(
    "last_words",
    [
        "Fatal Python error: cannot allocate memory for thread-local data: ABORT",
        "terminate called after throwing an instance of 'std::bad_alloc'",
        "numpy._core._exceptions._ArrayMemoryError: Unable to allocate 1.00 GiB for an array",
    ],
)
def test_a_child_that_dies_of_memory_is_reported_as_out_of_memory(monkeypatch, last_words):
    """The parent reads a dead child's last words with the same classifier the child uses for its exceptions."""
    from relulint.probe import runner

    script = f"import os, sys; sys.stderr.write({last_words!r} + '\\n'); sys.stderr.flush(); os.abort()"
    monkeypatch.setattr(runner, "child_command", lambda: [sys.executable, "-c", script])
    child = runner.Child()
    assert child.wait(30, runner.Progress("m.onnx")) == "the probe ran out of memory under its limit (--probe-memory)"


def test_a_child_that_crashes_otherwise_is_not_called_out_of_memory(monkeypatch):
    from relulint.probe import runner

    script = "import os, sys; sys.stderr.write('Segmentation fault in a kernel\\n'); sys.stderr.flush(); os.abort()"
    monkeypatch.setattr(runner, "child_command", lambda: [sys.executable, "-c", script])
    outcome = runner.Child().wait(30, runner.Progress("m.onnx"))
    assert outcome == "the probe's onnxruntime process crashed (SIGABRT): Segmentation fault in a kernel"


# ---- issue 15.2: one external-data gate for every tensor that can carry external data ----------
def external_tensor(name: str, location: str, dims=(4,), data_type=TensorProto.FLOAT, **extra: str) -> TensorProto:
    tensor = TensorProto(name=name, data_type=data_type, dims=list(dims), data_location=TensorProto.EXTERNAL)
    for key, value in {"location": location, **extra}.items():
        entry = tensor.external_data.add()
        entry.key, entry.value = key, value
    return tensor


def sparse_external(name: str, values_at: str, indices_at: str) -> onnx.SparseTensorProto:
    sparse = onnx.SparseTensorProto(dims=[4])
    sparse.values.CopyFrom(external_tensor(f"{name}_values", values_at, dims=(2,)))
    sparse.indices.CopyFrom(external_tensor(f"{name}_indices", indices_at, dims=(2,), data_type=TensorProto.INT64))
    return sparse


def carrier_model(carrier: str, location: str) -> onnx.ModelProto:
    """A Relu model with one hostile external tensor at ``location`` in the named place."""
    ok = "weights.bin"
    nodes = [helper.make_node("Relu", ["x"], ["y"], name="act")]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])],
    )
    functions, training = [], []
    if carrier == "initializer":
        graph.initializer.append(external_tensor("w", location))
    elif carrier == "sparse values":
        graph.sparse_initializer.append(sparse_external("s", location, ok))
    elif carrier == "sparse indices":
        graph.sparse_initializer.append(sparse_external("s", ok, location))
    elif carrier == "Constant value":
        graph.node.insert(0, helper.make_node("Constant", [], ["c"], value=external_tensor("c", location)))
    elif carrier == "Constant sparse_value":
        sparse = sparse_external("c", ok, location)
        graph.node.insert(0, helper.make_node("Constant", [], ["c"], sparse_value=sparse))
    elif carrier in ("tensor list attribute", "sparse list attribute"):
        attribute = AttributeProto(name="tables")
        if carrier == "tensor list attribute":
            attribute.type = AttributeProto.TENSORS
            attribute.tensors.extend([external_tensor("t0", ok), external_tensor("t1", location)])
        else:
            attribute.type = AttributeProto.SPARSE_TENSORS
            attribute.sparse_tensors.extend([sparse_external("t0", ok, ok), sparse_external("t1", location, ok)])
        custom = helper.make_node("Lookup", ["x"], ["z"], domain="custom", name="lookup")
        custom.attribute.append(attribute)
        graph.node.append(custom)
    elif carrier == "training_info":
        init = helper.make_graph([], "init", [], [helper.make_tensor_value_info("w", TensorProto.FLOAT, [4])])
        init.initializer.append(external_tensor("w", location))
        algorithm = helper.make_graph(
            [helper.make_node("Constant", [], ["k"], value=external_tensor("k", ok))], "algorithm", [], []
        )
        training.append(onnx.TrainingInfoProto(initialization=init, algorithm=algorithm))
    elif carrier == "uncalled function body":
        body = [helper.make_node("Constant", [], ["y"], value=external_tensor("secret", location))]
        functions.append(helper.make_function("local", "Unused", [], ["y"], body, [helper.make_opsetid("", 17)]))
    elif carrier == "If branch":
        branch = helper.make_graph(
            [helper.make_node("Identity", ["b"], ["out"])], "branch", [], [helper.make_tensor_value_info("out", 1, [4])]
        )
        branch.initializer.append(external_tensor("b", location))
        other = helper.make_graph(
            [helper.make_node("Identity", ["x"], ["out2"])],
            "other",
            [],
            [helper.make_tensor_value_info("out2", 1, [4])],
        )
        graph.input.append(helper.make_tensor_value_info("flag", TensorProto.BOOL, []))
        graph.node.append(helper.make_node("If", ["flag"], ["z"], then_branch=branch, else_branch=other, name="if"))
    else:
        raise AssertionError(carrier)
    opsets = [helper.make_opsetid("", 17), helper.make_opsetid("local", 1), helper.make_opsetid("custom", 1)]
    model = helper.make_model(graph, opset_imports=opsets, functions=functions)
    model.training_info.extend(training)
    return model


CARRIERS = [
    "initializer",
    "sparse values",
    "sparse indices",
    "Constant value",
    "Constant sparse_value",
    "tensor list attribute",
    "sparse list attribute",
    "training_info",
    "uncalled function body",
    "If branch",
]


@pytest.mark.parametrize("carrier", CARRIERS)
def test_every_carrier_of_external_data_passes_the_gate(tmp_path, carrier):
    from relulint.errors import ModelError
    from relulint.external import iter_tensors
    from relulint.loader import load_model

    (tmp_path / "weights.bin").write_bytes(bytes(64))
    hostile = carrier_model(carrier, "/etc/passwd")
    locations = [e.value for t in iter_tensors(hostile) for e in t.external_data if e.key == "location"]
    assert "/etc/passwd" in locations  # the gate's walk reaches this carrier
    path = save(hostile, tmp_path / "model.onnx")
    if carrier == "uncalled function body":  # inlining drops it: nothing that reads the model sees it again
        assert not load_model(path).model.functions
    else:
        with pytest.raises(ModelError, match="has the absolute location '/etc/passwd'"):
            load_model(path)
    # The same model with a location inside its folder loads, and that file is the one recorded as checked.
    path = save(carrier_model(carrier, "weights.bin"), tmp_path / "model.onnx")
    loaded = load_model(path)
    if carrier != "uncalled function body":
        assert set(loaded.external_files) == {"weights.bin"}
        assert loaded.external_files["weights.bin"].path == (tmp_path / "weights.bin").resolve()


@pytest.mark.parametrize("order", [("weights.bin", "/etc/passwd"), ("/etc/passwd", "weights.bin")])
def test_external_data_naming_its_location_twice_is_refused(tmp_path, order):
    """One reader takes the first 'location', another the last: a checked one and a hostile one together."""
    path = save_external(small_mlp(), tmp_path)
    model = onnx.load(path, load_external_data=False)
    tensor = model.graph.initializer[0]
    del tensor.external_data[:]
    for location in order:
        entry = tensor.external_data.add()
        entry.key, entry.value = "location", location
    save(model, path)
    expect_error(lint(str(path)), path, r"external data of tensor 'w_0' names the key 'location' twice$")


def test_probe_links_only_checked_files_and_only_inside_its_folder(tmp_path):
    from relulint.external import CheckedFile
    from relulint.probe.writer import LinkRefused, _link_external_data

    source = tmp_path / "w.bin"
    source.write_bytes(bytes(16))
    info = source.stat()
    checked = CheckedFile(source, info.st_dev, info.st_ino, info.st_size)
    folder = tmp_path / "probe"
    folder.mkdir()
    for location in ("../escaped.bin", ".", "sub/../../escaped.bin"):
        with pytest.raises(LinkRefused, match="would leave the probe's folder"):
            _link_external_data({location: checked}, folder, [])
    assert not (tmp_path / "escaped.bin").exists()
    # A file swapped since the check (another inode) is refused, not linked.
    other = tmp_path / "other.bin"
    other.write_bytes(bytes(16))
    stale = CheckedFile(other, info.st_dev, info.st_ino, info.st_size)
    with pytest.raises(LinkRefused, match="changed since it was checked"):
        _link_external_data({"x.bin": stale}, folder, [])
    assert not (folder / "x.bin").exists()
    notes: list = []
    _link_external_data({"sub/w.bin": checked}, folder, notes)
    assert (folder / "sub" / "w.bin").stat().st_ino == info.st_ino and not notes


def test_probe_copies_a_weight_file_it_cannot_link_only_when_small_and_says_so(tmp_path, monkeypatch):
    from relulint.config import Config
    from relulint.engine import analyse
    from relulint.probe import writer

    _probe_available()
    path = save_external(small_mlp(bias=-30.0), tmp_path)

    def no_link(*_args, **_kwargs):
        raise OSError(18, "Invalid cross-device link")

    monkeypatch.setattr(writer.os, "link", no_link)
    result = analyse(str(path), Config(select=("RL5",)))
    copied = [n.message for n in result.notes if "was copied into the probe's temporary folder" in n.message]
    assert len(copied) == 1 and "'weights.bin'" in copied[0], [n.message for n in result.notes]
    assert any(f.rule == "RL501" for f in result.findings)  # the probe ran on the copy
    monkeypatch.setattr(writer, "COPY_AT_MOST", 100)
    result = analyse(str(path), Config(select=("RL5",)))
    skipped = [n.message for n in result.notes if n.message.startswith("the probe did not run")]
    assert skipped and "'weights.bin'" in skipped[0] and "too large to copy" in skipped[0], skipped
    assert not any(f.rule == "RL501" for f in result.findings)


def test_probe_reads_external_data_of_a_constant_node(tmp_path):
    """The linker takes every checked location, not only initializers': a Constant's external value works."""
    _probe_available()
    weights_file = tmp_path / "weights.bin"
    weight = np.full((8, 8), 0.1, np.float32)
    bias = np.full(8, -40.0, np.float32)
    weights_file.write_bytes(weight.tobytes() + bias.tobytes())
    w = external_tensor("w", "weights.bin", dims=(8, 8), length=str(weight.nbytes))
    b = external_tensor("b", "weights.bin", dims=(8,), offset=str(weight.nbytes), length=str(bias.nbytes))
    graph = helper.make_graph(
        [
            helper.make_node("Constant", [], ["b"], value=b, name="bias"),
            helper.make_node("Gemm", ["x", "w", "b"], ["h"], name="fc"),
            helper.make_node("Relu", ["h"], ["y"], name="act"),
        ],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 8])],
        initializer=[w],
    )
    path = save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), tmp_path / "model.onnx")
    report = tmp_path / "r.json"
    outcome = lint(str(path), report=report, probe=True)
    model = expect_analysed(outcome)
    assert model["probe"]["samples"] > 0, model["notes"]
    assert any(f["rule"] == "RL501" for f in model["findings"]), model["notes"]
