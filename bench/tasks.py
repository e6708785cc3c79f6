"""The in-process workloads of the benchmark, one per child process.

    python bench/tasks.py TASK MODEL [BATCH]

Each task prints one JSON line ``{"work_s": seconds}``: the time of the work itself, after the
interpreter started and imported its modules (the process's wall time, measured by the runner,
includes both).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np

CHUNK_BYTES = 16 * 1024 * 1024


def _summary(values: np.ndarray) -> tuple[float, float, float, float]:
    return float(values.mean()), float(values.std()), float(values.min()), float(values.max())


def onnx_load(path: str) -> None:
    """Floor: parse the model with onnx.load (external data included, as onnx does by default)."""
    import onnx

    onnx.load(path)


def load_numpy(path: str) -> None:
    """Floor: onnx.load, then mean, std, min and max of every float initializer in numpy."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(path)
    for tensor in model.graph.initializer:
        values = numpy_helper.to_array(tensor)
        if values.dtype.kind == "f" and values.size:
            _summary(values)


def load_walk(path: str) -> None:
    """Floor (issue 16): onnx.load, then one Python pass over the nodes reading each one's op type, inputs and
    outputs into a producer map (the least a linter that follows the data between nodes does)."""
    import onnx

    model = onnx.load(path)
    producers: dict[str, str] = {}
    for node in model.graph.node:
        for name in node.input:
            producers.get(name)
        for name in node.output:
            producers[name] = node.op_type


def stream_numpy(path: str) -> None:
    """Floor for external data: one pass over the .data file in 16 MB chunks (sum, sum of squares, min, max)."""
    data = Path(path).with_name(Path(path).name + ".data")
    buffer = bytearray(CHUNK_BYTES)
    total = squares = 0.0
    low, high = np.inf, -np.inf
    with open(data, "rb", buffering=0) as file:
        while True:
            read = file.readinto(buffer)
            if not read:
                break
            chunk = np.frombuffer(buffer, dtype=np.float32, count=read // 4)
            total += float(chunk.sum(dtype=np.float64))
            squares += float(np.dot(chunk, chunk))
            low, high = min(low, float(chunk.min())), max(high, float(chunk.max()))


def ort(path: str, batch: str) -> None:
    """Floor: one plain onnxruntime inference (session creation from the file path included)."""
    import onnxruntime

    session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    feeds = {}
    rng = np.random.default_rng(0)
    for model_input in session.get_inputs():
        shape = [int(batch) if not isinstance(d, int) else d for d in model_input.shape]
        feeds[model_input.name] = rng.standard_normal(shape, dtype=np.float32)
    session.run(None, feeds)


def ort_tokens(path: str, batch: str, tokens: str) -> None:
    """Floor for a language model: one plain onnxruntime inference on ``batch`` sequences of ``tokens`` token
    ids below the vocabulary (the logits' last dim), attention_mask all ones; session creation included."""
    import onnxruntime

    session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    vocab = session.get_outputs()[0].shape[-1]
    shape = (int(batch), int(tokens))
    ids = np.random.default_rng(0).integers(0, vocab, size=shape, dtype=np.int64)
    session.run(None, {"input_ids": ids, "attention_mask": np.ones(shape, np.int64)})


def relulint_graph(path: str) -> None:
    """relulint's load-plus-graph (issue 2): load_model + build_graph + find_layers."""
    from relulint.graph import build_graph
    from relulint.loader import load_model
    from relulint.units import find_layers

    find_layers(build_graph(load_model(path)))


TASKS = {
    "onnx_load": onnx_load,
    "load_numpy": load_numpy,
    "load_walk": load_walk,
    "stream_numpy": stream_numpy,
    "ort": ort,
    "ort_tokens": ort_tokens,
    "relulint_graph": relulint_graph,
}


def main(argv: list[str]) -> None:
    task, *args = argv
    # Import what the task imports before the clock starts, so work_s is the work alone.
    if task in ("onnx_load", "load_numpy", "load_walk"):
        import onnx  # noqa: F401
    elif task in ("ort", "ort_tokens"):
        import onnxruntime  # noqa: F401
    elif task == "relulint_graph":
        import relulint.graph
        import relulint.units  # noqa: F401
    started = time.perf_counter()
    TASKS[task](*args)
    print(json.dumps({"work_s": time.perf_counter() - started}))


if __name__ == "__main__":
    main(sys.argv[1:])
