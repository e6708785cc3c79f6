"""How a run gets done quickly: the instrumented file, the early child, prefetched batches, threaded statistics."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
import onnx
import pytest

from relulint import launch, loader
from relulint.config import Config
from relulint.engine import analyse
from relulint.graph import build_graph
from relulint.loader import load_model
from relulint.modelkit import ModelBuilder
from relulint.probe import runner, worker
from relulint.probe.inputs import DataError, InputSpec, parse_distribution, synthetic_batches
from relulint.probe.instrument import plan
from relulint.probe.shapes import infer_shapes
from relulint.probe.specs import input_specs
from relulint.probe.writer import write_model
from relulint.units import find_layers

WIDTH = 2100  # one 2100 x 2100 float weight: 17.6 MB, over the size whose weights stay in the file


def large_mlp() -> onnx.ModelProto:
    b = ModelBuilder(seed=3)
    x = b.input("x", ["N", WIDTH])
    h = b.relu(b.gemm(x, WIDTH, WIDTH, name="wide"), "wide_relu")
    y = b.relu(b.gemm(h, WIDTH, 16, bias=np.full(16, -50.0, np.float32), name="narrow"), "narrow_relu")
    return b.build([y], [["N", 16]])


@pytest.fixture(scope="module")
def large(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("large") / "large.onnx"
    onnx.save(large_mlp(), path)
    assert path.stat().st_size > loader.STRIP_INLINE_WEIGHTS_ABOVE
    return path


def instrumented(path: Path, folder: Path) -> Path:
    graph = build_graph(load_model(path))
    layers = find_layers(graph)
    specs = input_specs(graph, Config(), 4, None)
    return write_model(graph, plan(graph, layers, infer_shapes(graph, specs.specs)), folder)


def test_the_instrumented_file_holds_the_graph_and_links_the_weights(large, tmp_path):
    written = instrumented(large, tmp_path)
    assert written.stat().st_size < 100_000  # the 17.6 MB weight is not copied into it
    model = onnx.load(written, load_external_data=False)
    external = {t.name: t for t in model.graph.initializer if t.data_location == onnx.TensorProto.EXTERNAL}
    assert "w_0" in external
    assert {next(e.value for e in t.external_data if e.key == "location") for t in external.values()} == {"large.onnx"}
    linked = tmp_path / "large.onnx"
    assert linked.stat().st_size == large.stat().st_size
    if linked.stat().st_dev == large.stat().st_dev:
        assert os.path.samefile(linked, large)  # a hard link: nothing copied


def test_a_model_named_like_the_instrumented_file_is_probed(large, tmp_path):
    renamed = tmp_path / "instrumented.onnx"
    os.link(large, renamed)
    result = analyse(str(renamed), Config(select=("RL5",), batch=4, samples=8))
    assert result.error is None and "probe" in result.analyses.to_json(), [n.message for n in result.notes]
    narrow = result.analyses.to_json()["probe"]["layers"]["narrow_relu"]
    assert narrow["dead"] == 16  # a bias of -50 under He-scaled inputs: never positive


def test_the_hash_of_a_mapped_file_is_the_files(large):
    import hashlib

    assert load_model(large).sha256 == hashlib.sha256(large.read_bytes()).hexdigest()


# ---- the child started before it is needed -------------------------------------------------------


def test_a_prestarted_child_is_taken_once_and_a_spare_is_stopped():
    runner.prestart()
    spare = runner._spare
    assert spare is not None
    assert runner.take_child() is spare
    assert runner._spare is None
    spare.stop()
    runner.prestart()
    second = runner._spare
    runner.stop_spare()
    assert runner._spare is None and second.process.poll() is not None


def test_a_dead_spare_is_replaced():
    runner.prestart()
    dead = runner._spare
    dead.process.kill()
    dead.process.wait()
    child = runner.take_child()
    try:
        assert child is not dead and child.process.poll() is None
    finally:
        child.stop()


def test_the_time_limit_counts_from_the_job_not_from_the_start(tmp_path, monkeypatch):
    runner.prestart()
    started = runner._spare.started
    monkeypatch.setattr(runner._spare, "started", started - 1000)  # as if it had waited for long
    try:
        result = analyse(str(_small(tmp_path)), Config(select=("RL5",), probe_timeout=30))
    finally:
        runner.stop_spare()  # in case the analysis did not take it
    assert "probe" in result.analyses.to_json(), [n.message for n in result.notes]


def _small(tmp_path: Path) -> Path:
    b = ModelBuilder(seed=1)
    x = b.input("x", ["N", 8])
    y = b.relu(b.gemm(x, 8, 8, name="fc"), "fc_relu")
    path = tmp_path / "small.onnx"
    onnx.save(b.build([y], [["N", 8]]), path)
    return path


@pytest.mark.parametrize(
    ("arguments", "likely"),
    [
        ([], False),
        (["model.onnx"], True),
        (["--batch", "32", "--format", "json", "model.onnx"], True),
        (["--no-probe", "model.onnx"], False),
        (["--list-rules"], False),
        (["--explain", "RL501"], False),
        (["--explain=RL501"], False),
        (["--version"], False),
        (["-h"], False),
        (["--jobs", "2", "a.onnx", "b.onnx"], False),
        (["--select=RL1", "model.onnx"], False),
    ],
)
def test_the_launcher_starts_a_child_only_when_a_probe_is_likely(arguments, likely):
    assert launch.probe_likely(arguments) is likely


# ---- batches made ahead --------------------------------------------------------------------------


SPECS = [InputSpec("x", "float32", (4, 3), batched=True)]


def test_prefetched_batches_equal_the_batches():
    made = list(synthetic_batches(SPECS, 4, 10, parse_distribution("normal"), 0))
    prefetched = list(worker.Prefetched(synthetic_batches(SPECS, 4, 10, parse_distribution("normal"), 0)))
    assert [b["x"].shape for b in prefetched] == [(4, 3), (4, 3), (2, 3)]
    for a, b in zip(made, prefetched, strict=True):
        np.testing.assert_array_equal(a["x"], b["x"])


def test_a_failing_batch_raises_where_it_is_used():
    def batches():
        yield {"x": np.zeros((4, 3), np.float32)}
        raise DataError("file 2 is broken")

    iterator = iter(worker.Prefetched(batches()))
    assert next(iterator)["x"].shape == (4, 3)
    with pytest.raises(DataError, match="file 2 is broken"):
        next(iterator)


def test_batches_are_made_in_turn_when_no_thread_can_start(monkeypatch):
    def refuse(*args, **kwargs):
        raise RuntimeError("can't start new thread")

    monkeypatch.setattr(worker.ThreadPoolExecutor, "submit", refuse)
    prefetched = worker.Prefetched(synthetic_batches(SPECS, 4, 8, parse_distribution("normal"), 0))
    assert prefetched.pool is None
    assert len(list(prefetched)) == 2


def test_the_temporary_folder_is_removed_after_the_probe(tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    result = analyse(str(_small(tmp_path)), Config(select=("RL5",)))
    assert "probe" in result.analyses.to_json()
    assert list((tmp_path / "tmp").iterdir()) == []


# ---- the end of a run ----------------------------------------------------------------------------


def _children() -> set[int]:
    found: set[int] = set()
    for task in Path(f"/proc/{os.getpid()}/task").iterdir():
        try:
            found.update(int(pid) for pid in (task / "children").read_text().split())
        except OSError:
            pass
    return found


@pytest.mark.skipif(not Path(f"/proc/{os.getpid()}/task").is_dir(), reason="needs Linux /proc")
def test_the_child_is_reaped_after_the_outcome(tmp_path):
    import time

    before = _children()
    result = analyse(str(_small(tmp_path)), Config(select=("RL5",)))
    assert "probe" in result.analyses.to_json()
    deadline = time.monotonic() + 10
    while _children() - before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _children() - before  # neither running nor a zombie


def test_the_command_exits_with_its_status_and_its_whole_output(tmp_path):
    import json
    import subprocess
    import sys

    root = Path(__file__).resolve().parent.parent
    command = [sys.executable, "-m", "relulint", "--format", "json"]
    dying = subprocess.run(
        [*command, str(root / "examples" / "dying_mlp.onnx")], check=False, capture_output=True, text=True, cwd=tmp_path
    )
    assert dying.returncode == 1, dying.stderr
    document = json.loads(dying.stdout)  # flushed in full before the process ended
    assert document["models"][0]["probe"]["layers"]
    assert dying.stderr == ""
    missing = subprocess.run([*command, "no-such.onnx"], check=False, capture_output=True, text=True, cwd=tmp_path)
    assert missing.returncode == 2
    assert missing.stderr.strip() == "relulint: error: no-such.onnx: no such file"
    assert json.loads(missing.stdout)["models"][0]["error"] == "no such file"


def test_exit_now_turns_exit_codes_into_statuses(monkeypatch, capsys):
    statuses = []
    monkeypatch.setattr(launch.os, "_exit", statuses.append)
    monkeypatch.setattr(launch.atexit, "_run_exitfuncs", lambda: None)  # not this test process's handlers
    for code in (None, 0, 1, 2, "a message"):
        launch.exit_now(code)
    assert statuses == [0, 0, 1, 2, 1]
    assert capsys.readouterr().err == "a message\n"


# ---- weight statistics on two threads (static lint without the probe) ----------------------------


def test_statistics_on_threads_equal_those_on_one(tmp_path, monkeypatch):
    from relulint import engine
    from relulint.report.json import dumps

    b = ModelBuilder(seed=4)
    h = b.input("x", ["N", 32])
    for index in range(6):
        h = b.relu(b.gemm(h, 32, 32, name=f"fc{index}"), f"act{index}")
    path = tmp_path / "deep.onnx"
    onnx.save(b.build([h], [["N", 32]]), path)

    pools = []

    class CountedPool(engine.ThreadPoolExecutor):
        def __init__(self, workers: int) -> None:
            pools.append(workers)
            super().__init__(workers)

    monkeypatch.setattr(engine, "ThreadPoolExecutor", CountedPool)

    def report(threads: int) -> dict:
        monkeypatch.setattr(engine, "STATS_THREADS", threads)
        monkeypatch.setattr(engine, "THREADED_STATS_ABOVE", 0)  # a small model takes the threaded path too
        return engine.analyse(str(path), Config(probe=False)).to_json()

    one, two = report(1), report(2)
    assert pools == [2]  # one threaded run, one not
    assert all("weight_std" in unit["metrics"] for unit in two["units"])
    assert dumps(one) == dumps(two)
