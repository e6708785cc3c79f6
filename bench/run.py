"""relulint's benchmark: floors, alternatives and relulint on generated models, all in one run.

    python bench/run.py            # full run (under 15 minutes on 2 cores)
    python bench/run.py --quick    # ResNet-50 rows and a small --jobs folder (under 2 minutes)

Every measurement is a separate process, repeated; rows of one model are run round-robin (rep 1 of
every row, then rep 2, ...) so that a change in machine load hits all rows alike and the ratios,
which compare rows of the same run, stay fair. See bench/README.md for what each row measures.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import models as bench_models
from measure import Measurement, Sample, run_once

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
OUT_DIR = BENCH_DIR / "out"
PYTHON = sys.executable
TASKS = str(BENCH_DIR / "tasks.py")
RELULINT = [PYTHON, "-m", "relulint"]
POLYGRAPHY = [shutil.which("polygraphy") or "polygraphy"]
RUN_TIMEOUT = 900.0
RETRY_PAUSE = 15.0

MAIN_MODELS = ["resnet50", "mlp50x1024", "graph20k", "external1g", "opt125m"]
NODE_SERIES = ["nodes1k", "nodes10k", "nodes100k"]
NODE_HEAVY = ("graph20k",)  # models whose static lint is judged against a pass over their nodes (issue 16)
PARAM_SERIES = ["params4m", "params16m", "params67m"]


# ---- rows ------------------------------------------------------------------------------------


@dataclass
class Row:
    key: str
    label: str
    command: list[str]
    ok_codes: tuple[int, ...] = (0,)
    validate: Callable[[Sample], str | None] | None = None  # a problem with the run's output, or None
    heavy: bool = False  # slow row (polygraphy, probe): measured fewer times
    measurement: Measurement | None = None
    error: str | None = None

    def __post_init__(self) -> None:
        self.measurement = Measurement(self.label)


def _polygraphy_ok(sample: Sample) -> str | None:
    text = sample.stdout + sample.stderr
    if "could not be imported" in text:
        return "polygraphy lacks a module: " + text[text.find("Module:") :][:160]
    if "PASSED" not in text and "FAILED" not in text:  # FAILED is a lint verdict: still a measured run
        return "polygraphy printed neither PASSED nor FAILED: " + text.strip()[-200:]
    return None


def _polygraphy_run_ok(sample: Sample) -> str | None:
    text = sample.stdout + sample.stderr
    if "PASSED" not in text:
        return "polygraphy run did not pass: " + text.strip()[-300:]
    return None


def _model_json(sample: Sample) -> dict | None:
    try:
        return json.loads(sample.stdout)["models"][0]
    except (ValueError, KeyError, IndexError):
        return None


def _relulint_ok(sample: Sample) -> str | None:
    model = _model_json(sample)
    if model is None:
        return "relulint printed no JSON report: " + (sample.stderr.strip() or sample.stdout.strip())[-300:]
    if model.get("error"):
        return f"relulint could not analyse the model: {model['error']}"
    return None


def _text_ok(sample: Sample) -> str | None:
    """The default text report: exit 0 or 1 is checked by the caller; a model error is printed on stderr."""
    if "relulint: error" in sample.stderr:
        return sample.stderr.strip()[-300:]
    return None


def _probe_ok(sample: Sample) -> str | None:
    problem = _relulint_ok(sample)
    if problem:
        return problem
    model = _model_json(sample)
    if "probe" not in model:
        notes = "; ".join(n["message"] for n in model.get("notes", []) if "probe" in n["message"].lower())
        return f"the report has no probe results ({notes or 'no note says why'})"
    return None


def task(name: str, model: bench_models.BenchModel, *args: str) -> list[str]:
    return [PYTHON, TASKS, name, str(model.path), *args]


def input_shape(model: bench_models.BenchModel, batch: int) -> str:
    return f"{model.input_name}:[{','.join(str(d) for d in (batch, *model.sample_shape))}]"


# A language model's probe row: 8 sequences of 128 tokens (issue 16), the same feed as its plain-inference floor.
TOKEN_BATCH, TOKENS = 8, 128
TOKEN_PROBE_MEMORY = "16GB"  # the probe's address-space cap: onnxruntime maps the 5.7 GB weight file of opt1_3b


def token_model_rows(model: bench_models.BenchModel, probe: bool) -> list[Row]:
    """A decoder's rows: its floors are one streaming pass over the weights and one plain inference."""
    path = str(model.path)
    rows = [
        Row("stream_numpy", "floor  numpy pass streaming the .data file", task("stream_numpy", model)),
        Row(
            "ort_tokens",
            f"floor  onnxruntime inference, {TOKEN_BATCH} x {TOKENS} tokens",
            task("ort_tokens", model, str(TOKEN_BATCH), str(TOKENS)),
        ),
        Row("load_graph", "relulint load + graph + units (in-process)", task("relulint_graph", model)),
        Row("static", "relulint --no-probe", [*RELULINT, "--no-probe", path], (0, 1), _text_ok),
    ]
    if probe:
        rows.append(
            Row(
                "probe_tokens",
                f"relulint with probe, {TOKEN_BATCH} x {TOKENS} tokens",
                [
                    *RELULINT,
                    "--batch",
                    str(TOKEN_BATCH),
                    "--samples",
                    str(TOKEN_BATCH),
                    "--input-shape",
                    f"input_ids={TOKEN_BATCH}x{TOKENS}",
                    "--probe-timeout",
                    "600",
                    "--probe-memory",
                    TOKEN_PROBE_MEMORY,
                    "--format",
                    "json",
                    path,
                ],
                (0, 1),
                _probe_ok,
            )
        )
    return rows


def model_rows(model: bench_models.BenchModel, probe: bool, polygraphy_run_batches: tuple[int, ...]) -> list[Row]:
    if model.tokens:
        return token_model_rows(model, probe)
    path = str(model.path)
    external = len(bench_models.weight_files(model)) > 1
    rows = [
        Row("onnx_load", "floor  onnx.load", task("onnx_load", model)),
        Row("load_numpy", "floor  onnx.load + numpy pass over weights", task("load_numpy", model)),
    ]
    if model.name in NODE_HEAVY:
        rows.append(Row("load_walk", "floor  onnx.load + Python pass over the nodes", task("load_walk", model)))
    if external:
        rows.append(Row("stream_numpy", "floor  numpy pass streaming the .data file", task("stream_numpy", model)))
    rows += [Row(f"ort{b}", f"floor  onnxruntime inference, batch {b}", task("ort", model, str(b))) for b in (8, 32)]
    rows.append(
        Row(
            "pg_lint",
            "alt    polygraphy check lint",
            [*POLYGRAPHY, "check", "lint", path],
            validate=_polygraphy_ok,
            heavy=True,
        )
    )
    rows += [
        Row(
            f"pg_run{b}",
            f"alt    polygraphy run --onnxrt mark all, batch {b}",
            [
                *POLYGRAPHY,
                "run",
                path,
                "--onnxrt",
                "--onnx-outputs",
                "mark",
                "all",
                "--input-shapes",
                input_shape(model, b),
            ],
            validate=_polygraphy_run_ok,
            heavy=True,
        )
        for b in polygraphy_run_batches
    ]
    rows += [
        Row("load_graph", "relulint load + graph + units (in-process)", task("relulint_graph", model)),
        Row("static", "relulint --no-probe", [*RELULINT, "--no-probe", path], (0, 1), _text_ok),
    ]
    if probe:
        rows += [
            Row(
                f"probe{b}",
                f"relulint with probe, batch {b}",
                [*RELULINT, "--batch", str(b), "--samples", str(b), "--probe-timeout", "600", "--format", "json", path],
                (0, 1),
                _probe_ok,
                # Measured as often as its floor (plain inference): the ratio compares medians of
                # equal samples, and the probe's wall time varies more on a shared machine.
            )
            for b in (8, 32)
        ]
    return rows


# ---- running ---------------------------------------------------------------------------------


def compile_relulint() -> str:
    """Byte-compile relulint as pip does when it installs a wheel, so every row runs installed code.

    The floors' packages (onnx, onnxruntime, numpy) were byte-compiled when pip installed them. An
    editable install of relulint is compiled on first import, unless PYTHONDONTWRITEBYTECODE is set
    (it is on this project's machine): then every run would compile relulint's sources anew (about
    50-80 ms per run measured here), a cost no installed relulint pays.
    """
    import compileall

    package = REPO / "relulint"
    ok = compileall.compile_dir(str(package), quiet=1)
    flag = "set" if sys.flags.dont_write_bytecode else "unset"
    return f"relulint byte-compiled in place ({'ok' if ok else 'with errors'}; PYTHONDONTWRITEBYTECODE {flag})"


def measure_rows(rows: list[Row], reps: int, heavy_reps: int, log: Callable[[str], None]) -> None:
    """Round-robin: repetition r of every row before repetition r+1 of any.

    A failed run is retried once after a pause (the relulint under test is a working tree that may be
    mid-edit); a row that fails twice is reported as failed and left out of the targets.
    """
    for rep in range(reps):
        for row in rows:
            if row.error or (row.heavy and rep >= heavy_reps):
                continue
            for attempt in range(2):
                sample = run_once(row.command, timeout=RUN_TIMEOUT)
                problem = _problem(row, sample)
                if problem is None:
                    break
                log(f"    {row.label}: failed ({problem[:200]}){'; retrying' if attempt == 0 else ''}")
                if attempt == 0:
                    time.sleep(RETRY_PAUSE)
            if problem:
                row.error = problem
                continue
            row.measurement.samples.append(sample)
            log(f"    rep {rep + 1} {row.label:<48} {sample.wall_s:7.2f} s {sample.rss_mb:8.0f} MB")


def _problem(row: Row, sample: Sample) -> str | None:
    if sample.returncode not in row.ok_codes:
        return f"exit {sample.returncode}: " + (sample.stderr.strip() or sample.stdout.strip())[-300:]
    return row.validate(sample) if row.validate is not None else None


def probe_available() -> tuple[bool, str]:
    """Does ``relulint --batch 32`` run the probe? Tried on one small model."""
    small = bench_models.SMALL_FOLDER / "small00.onnx"
    sample = run_once([*RELULINT, "--batch", "32", "--samples", "32", "--format", "json", str(small)], timeout=300)
    problem = (
        _probe_ok(sample)
        if sample.returncode in (0, 1)
        else f"exit {sample.returncode}: {sample.stderr.strip()[-300:]}"
    )
    return problem is None, problem or ""


# ---- reporting -------------------------------------------------------------------------------


def fmt_s(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def by_key(rows: list[Row]) -> dict[str, Row]:
    return {row.key: row for row in rows if row.measurement.samples and not row.error}


def model_table(model: bench_models.BenchModel, rows: list[Row]) -> list[str]:
    lines = [
        f"{model.name}: {model.description} ({bench_models.size_mb(model):.0f} MB on disk)",
        f"  {'row':<50} {'wall s':>8} {'cpu s':>8} {'work s':>8} {'peak RSS MB':>12} {'runs':>5}",
    ]
    for row in rows:
        m = row.measurement
        if row.error:
            lines.append(f"  {row.label:<50} failed: {row.error[:150]}")
        elif m.samples:
            lines.append(
                f"  {row.label:<50} {fmt_s(m.wall_s):>8} {fmt_s(m.cpu_s):>8} {fmt_s(m.work_s):>8} {m.rss_mb:12.0f} {len(m.samples):>5}"
            )
    return lines


@dataclass
class Target:
    issue: int
    what: str
    model: str
    measured: float | None
    limit: float
    direction: str  # "<=", "<" or ">="
    unit: str = "x"
    cpu: float | None = None  # the same ratio over CPU time: steadier when other processes share the cores

    @property
    def status(self) -> str:
        if self.measured is None:
            return "n/a"
        met = self.measured >= self.limit if self.direction == ">=" else self.measured <= self.limit
        return "met" if met else "MISSED"

    def line(self) -> str:
        value = "-" if self.measured is None else f"{self.measured:.2f}{self.unit}"
        cpu = "" if self.cpu is None else f"{self.cpu:.2f}x"
        target = f"{self.direction} {self.limit:g}{self.unit}"
        return f"  #{self.issue:<3} {self.what:<52} {self.model:<11} {value:>10} {cpu:>7} {target:>10}  {self.status}"


TARGETS_HEADER = f"  {'':4} {'ratio':<52} {'model':<11} {'measured':>10} {'cpu':>7} {'target':>10}"


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None or b == 0 else a / b


def model_targets(name: str, rows: dict[str, Row]) -> list[Target]:
    def get(key: str, what: str) -> float | None:
        return getattr(rows[key].measurement, what) if key in rows else None

    def time_target(
        issue: int, what: str, a: str, b: str, limit: float, direction: str = "<=", of: str = "wall_s"
    ) -> Target:
        cpu = _ratio(get(a, "cpu_s"), get(b, "cpu_s")) if of == "wall_s" else None
        return Target(issue, what, name, _ratio(get(a, of), get(b, of)), limit, direction, cpu=cpu)

    targets = []
    if bench_models.RECIPES[name].model.tokens:
        return [
            Target(16, "static lint peak RSS", name, get("static", "rss_mb"), 512, "<", " MB"),
            time_target(16, "static lint / streaming numpy pass, wall time", "static", "stream_numpy", 1.3),
            time_target(
                16, f"probe / plain inference, {TOKEN_BATCH}x{TOKENS} tokens, wall", "probe_tokens", "ort_tokens", 1.25
            ),
            Target(
                16,
                f"probe / plain inference, {TOKEN_BATCH}x{TOKENS} tokens, peak RSS",
                name,
                _ratio(get("probe_tokens", "rss_mb"), get("ort_tokens", "rss_mb")),
                1.25,
                "<=",
            ),
        ]
    if name in ("resnet50", "graph20k"):
        targets.append(
            time_target(2, "load+graph / onnx.load, in-process work time", "load_graph", "onnx_load", 1.5, of="work_s")
        )
        targets.append(time_target(2, "load+graph / onnx.load, process wall time", "load_graph", "onnx_load", 1.5))
    if "stream_numpy" in rows or name == "external1g":
        targets.append(Target(7, "static lint peak RSS", name, get("static", "rss_mb"), 256, "<", " MB"))
        targets.append(time_target(7, "static lint / streaming numpy pass, wall time", "static", "stream_numpy", 1.3))
    else:
        targets.append(time_target(3, "static lint / (onnx.load + numpy pass), wall time", "static", "load_numpy", 1.3))
    if name in NODE_HEAVY:
        targets.append(time_target(16, "static lint / (onnx.load + node pass), wall time", "static", "load_walk", 2))
    targets.append(time_target(7, "polygraphy check lint / static lint, wall time", "pg_lint", "static", 3, ">="))
    for batch in (8, 32):
        if f"probe{batch}" not in rows:
            continue
        targets.append(
            time_target(4, f"probe / plain inference, batch {batch}, wall time", f"probe{batch}", f"ort{batch}", 1.25)
        )
        targets.append(
            Target(
                4,
                f"probe / plain inference, batch {batch}, peak RSS",
                name,
                _ratio(get(f"probe{batch}", "rss_mb"), get(f"ort{batch}", "rss_mb")),
                1.25,
                "<=",
            )
        )
        if f"pg_run{batch}" in rows:
            targets.append(
                Target(
                    4,
                    f"probe / polygraphy run, batch {batch}, peak RSS",
                    name,
                    _ratio(get(f"probe{batch}", "rss_mb"), get(f"pg_run{batch}", "rss_mb")),
                    0.5,
                    "<=",
                )
            )
    return targets


def scaling_table(
    title: str,
    unit: str,
    scale: float,
    sizes: dict[str, float],
    rows_by_model: dict[str, dict[str, Row]],
    keys: list[tuple[str, str, str]],
) -> list[str]:
    """Wall (or work) time per size, and the marginal cost per size unit (seconds x ``scale``) between sizes."""
    names = list(sizes)
    lines = [title, f"  {'row':<44}" + "".join(f"{n:>12}" for n in names) + f"{'marginal ' + unit:>36}"]
    for key, label, which in keys:
        times = []
        for name in names:
            row = rows_by_model.get(name, {}).get(key)
            times.append(
                None if row is None else (row.measurement.work_s if which == "work" else row.measurement.wall_s)
            )
        margins = []
        for (a, ta), (b, tb) in zip(zip(names, times), zip(names[1:], times[1:])):
            if ta is not None and tb is not None:
                margins.append(f"{(tb - ta) / (sizes[b] - sizes[a]) * scale:.1f}")
        cells = "".join(f"{fmt_s(t):>12}" for t in times)
        lines.append(f"  {label + ' (' + which + ' s)':<44}{cells}{' -> '.join(margins):>36}")
    return lines


# ---- the run ---------------------------------------------------------------------------------


def environment() -> dict[str, str]:
    def version(module: str) -> str:
        try:
            return __import__(module).__version__
        except ImportError:
            return "missing"

    commit = subprocess.run(
        ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False
    ).stdout.strip()
    dirty = subprocess.run(
        ["git", "-C", str(REPO), "status", "--porcelain", "relulint"], capture_output=True, text=True, check=False
    ).stdout.strip()
    return {
        "python": platform.python_version(),
        "cpus": str(os.cpu_count()),
        "onnx": version("onnx"),
        "onnxruntime": version("onnxruntime"),
        "numpy": version("numpy"),
        "polygraphy": version("polygraphy"),
        "relulint": f"{commit}{' + uncommitted changes in relulint/' if dirty else ''}",
        "OPENBLAS_CORETYPE": os.environ.get("OPENBLAS_CORETYPE", "(unset)"),
    }


RUNTIME_DEPENDENCIES = ("onnx", "onnxruntime", "numpy", "networkx", "click", "jinja2")


def dependency_versions() -> dict[str, str]:
    """Resolved versions of relulint's runtime dependencies and everything they require, transitively (an
    upstream release that slows relulint down, as ml_dtypes 0.7.0 did, then shows up next to the numbers)."""
    import importlib.metadata as metadata
    import re

    versions: dict[str, str] = {}
    pending = list(RUNTIME_DEPENDENCIES)
    while pending:
        name = pending.pop()
        key = re.sub(r"[-_.]+", "-", name).lower()
        if key in versions:
            continue
        try:
            versions[key] = metadata.version(name)
            required = metadata.requires(name) or []
        except metadata.PackageNotFoundError:
            versions[key] = "missing"
            continue
        for requirement in required:
            if "extra ==" in requirement:
                continue
            match = re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", requirement)
            if match:
                pending.append(match.group(0))
    return dict(sorted(versions.items()))


# Start-up alone: each process relulint starts, as a median of fresh interpreters. The child's row is what
# it imports before it reads its job (relulint.probe.runner.BOOT), without onnx.
STARTUP_ROWS = (
    ("relulint --version", [PYTHON, "-m", "relulint", "--version"]),
    ("python -c 'import onnx'", [PYTHON, "-c", "import onnx"]),
    ("python -c 'import ml_dtypes'", [PYTHON, "-c", "import ml_dtypes"]),
    ("probe child imports", [PYTHON, "-I", "-c", "import relulint.probe.worker, onnxruntime"]),
    ("python -c pass (the floor)", [PYTHON, "-c", "pass"]),
)
# pyproject.toml keeps ml_dtypes below 0.7: its extension took 1.3 s to import (0.6.0: 0.2 s). The bench says
# when an ml_dtypes 0.7+ imports as fast again, i.e. when the constraint can go.
ML_DTYPES_FAST = 0.5  # seconds


def startup_lines(reps: int) -> list[str]:
    lines = ["Start-up (median wall time of fresh processes; targets: --version < 0.3 s)"]
    medians = {}
    for label, command in STARTUP_ROWS:
        times = []
        for _ in range(reps):
            began = time.perf_counter()
            subprocess.run(command, capture_output=True, check=False, cwd=REPO)
            times.append(time.perf_counter() - began)
        medians[label] = statistics.median(times)
        lines.append(f"  {label:<34}{medians[label]:>8.3f} s")
    ml_dtypes = dependency_versions().get("ml-dtypes", "missing")
    fast = medians["python -c 'import ml_dtypes'"] - medians["python -c pass (the floor)"] < ML_DTYPES_FAST
    if ml_dtypes != "missing" and tuple(int(x) for x in ml_dtypes.split(".")[:2]) >= (0, 7):
        verdict = "imports fast: the <0.7 constraint in pyproject.toml is no longer needed" if fast else "is slow"
        lines.append(f"  ml_dtypes {ml_dtypes} {verdict}")
    elif not fast:
        lines.append(f"  ml_dtypes {ml_dtypes} imports slowly even below 0.7: the constraint is no longer enough")
    return lines


def load_average() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def jobs_rows(folder: Path, probe: bool, jobs: tuple[int, ...]) -> list[Row]:
    base = [*RELULINT, *([] if probe else ["--no-probe"]), "--format", "json"]
    return [
        Row(
            f"jobs{j}",
            f"relulint {'' if probe else '--no-probe '}--jobs {j} on {folder.name}/",
            [*base, "--jobs", str(j), str(folder)],
            (0, 1),
            heavy=probe,
        )
        for j in jobs
    ]


def measure_jobs(folder: Path, count: int, probe: bool, reps: int, heavy_reps: int, log, emit) -> None:
    rows = jobs_rows(folder, probe, (1, 2))
    measure_rows(rows, reps, heavy_reps, log)
    emit()
    what = "with the probe" if probe else "static lint"
    emit(
        f"Many models, {what}: {count} small models (ResNets of 0.3M and MLPs of 1.3M parameters), {os.cpu_count()} cores"
    )
    for line in model_table(bench_models.BenchModel(folder.name, folder, "x", (), "folder"), rows)[1:]:
        emit(line)
    jobs = by_key(rows)
    if "jobs1" in jobs and "jobs2" in jobs:
        speedup = jobs["jobs1"].measurement.wall_s / jobs["jobs2"].measurement.wall_s
        emit(f"  --jobs 2 speed-up: {speedup:.2f}x; reports of --jobs 1 and --jobs 2: {_jobs_same_output(rows)}")


def _jobs_same_output(rows: list[Row]) -> str:
    """The reports of --jobs 1 and --jobs N must be identical apart from timestamps."""
    outputs = []
    for row in rows:
        if not row.measurement.samples:
            return "not measured"
        report = json.loads(row.measurement.samples[-1].stdout)
        outputs.append(
            [(m["path"], m.get("summary"), [(f["rule"], f["node"]) for f in m["findings"]]) for m in report["models"]]
        )
    return "identical, same order" if all(o == outputs[0] for o in outputs) else "DIFFERENT"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--quick", action="store_true", help="ResNet-50 rows and 20 small models only (under 2 minutes)"
    )
    parser.add_argument(
        "--reps", type=int, default=None, help="repetitions of each measurement (median reported) [5; --quick: 3]"
    )
    parser.add_argument(
        "--models",
        nargs="*",
        help="only these main models (default: all five; --quick: resnet50); opt1_3b (5.7 GB of weights) runs only when named",
    )
    parser.add_argument("--no-scaling", action="store_true", help="skip the node and parameter scaling series")
    parser.add_argument("--verbose", "-v", action="store_true", help="print every sample as it is measured")
    args = parser.parse_args(argv)

    started = time.perf_counter()
    log = print if args.verbose else (lambda _line: None)
    out: list[str] = []

    def emit(line: str = "") -> None:
        print(line, flush=True)
        out.append(line)

    env = environment()
    emit(f"relulint benchmark ({'quick' if args.quick else 'full'}), {time.strftime('%Y-%m-%d %H:%M:%S')}")
    emit("  " + ", ".join(f"{k} {v}" for k, v in env.items()))
    emit(f"  load average at start: {load_average()}")
    emit(f"  command: python bench/run.py {' '.join(argv if argv is not None else sys.argv[1:])}".rstrip())

    emit(f"  {compile_relulint()}")
    emit("  resolved dependencies: " + ", ".join(f"{k} {v}" for k, v in dependency_versions().items()))
    emit()
    for line in startup_lines(reps=3 if args.quick else 5):
        emit(line)

    main_models = args.models or (["resnet50"] if args.quick else MAIN_MODELS)
    reps = args.reps or (3 if args.quick else 5)
    heavy_reps = 1 if args.quick else min(reps, 3)
    print("preparing models ...", flush=True)
    series = [] if args.no_scaling or args.quick else NODE_SERIES + PARAM_SERIES
    bench_models.prepare(main_models + series, small_folder=True)
    prepared = {name: bench_models.RECIPES[name].model for name in main_models}
    probe, why_not = probe_available()
    emit()
    if not probe:
        emit("  probe rows left out: `relulint --batch 32 --samples 32 MODEL` does not produce probe results yet")
        emit(f"  ({why_not[:300]})")
    emit(
        f"  {reps} runs per row (median shown; polygraphy and scaling rows: {heavy_reps}); wall s = process wall time,"
    )
    emit(
        "  work s = the task's own time after its imports; peak RSS = max(largest process, sampled sum of its process tree)"
    )

    all_targets: list[Target] = []
    rows_by_model: dict[str, dict[str, Row]] = {}
    for name, model in prepared.items():
        print(f"measuring {name} ...", flush=True)
        pg_batches = (8, 32) if name == "resnet50" and not args.quick else (32,)
        rows = model_rows(model, probe, pg_batches)
        measure_rows(rows, reps, heavy_reps, log)
        emit()
        for line in model_table(model, rows):
            emit(line)
        rows_by_model[name] = by_key(rows)
        all_targets += model_targets(name, rows_by_model[name])

    if not args.no_scaling and not args.quick:
        series_rows: dict[str, dict[str, Row]] = {}
        for name in NODE_SERIES + PARAM_SERIES:
            print(f"measuring {name} ...", flush=True)
            model = bench_models.RECIPES[name].model
            rows = [
                Row("onnx_load", "onnx.load", task("onnx_load", model)),
                Row("load_numpy", "onnx.load + numpy pass", task("load_numpy", model)),
                Row("load_graph", "relulint load+graph", task("relulint_graph", model)),
                Row(
                    "static",
                    "relulint --no-probe",
                    [*RELULINT, "--no-probe", str(model.path)],
                    (0, 1),
                    _text_ok,
                ),
            ]
            measure_rows(rows, heavy_reps, heavy_reps, log)
            series_rows[name] = by_key(rows)
        keys = [
            ("onnx_load", "onnx.load", "work"),
            ("load_graph", "relulint load+graph", "work"),
            ("static", "relulint --no-probe", "wall"),
        ]
        emit()
        for line in scaling_table(
            "Scaling with nodes (chains of Gemm/Relu/Add/Identity on [N,16])",
            "us/node",
            1e6,
            {n: float(n.removeprefix("nodes").replace("k", "000")) for n in NODE_SERIES},
            series_rows,
            keys,
        ):
            emit(line)
        keys[0] = ("load_numpy", "onnx.load + numpy pass", "work")
        params = {"params4m": 4.2e6, "params16m": 16.8e6, "params67m": 67.1e6}
        emit()
        for line in scaling_table(
            "Scaling with parameters (4 Gemm+ReLU layers of width 1024/2048/4096)",
            "ms/Mparam",
            1e3,
            {k: v / 1e6 for k, v in params.items()},
            series_rows,
            keys,
        ):
            emit(line)
        emit(
            "  marginal = (time difference) / (size difference) between successive sizes; equal values mean linear growth"
        )

    print("measuring --jobs ...", flush=True)
    count = 20 if args.quick else bench_models.SMALL_COUNT
    folder = _subset_folder(bench_models.SMALL_FOLDER, count) if args.quick else bench_models.SMALL_FOLDER
    measure_jobs(folder, count, False, reps, heavy_reps, log, emit)
    if probe and not args.quick:  # the probe costs about a second per model: a smaller folder
        measure_jobs(_subset_folder(bench_models.SMALL_FOLDER, 10), 10, True, reps, heavy_reps, log, emit)

    emit()
    emit("Targets (ratios of medians from this run; 'cpu' is the same ratio over user+system CPU time)")
    emit(TARGETS_HEADER)
    for target in all_targets:
        emit(target.line())
    emit()
    emit(f"  load average at end: {load_average()}; total bench time {time.perf_counter() - started:.0f} s")

    OUT_DIR.mkdir(exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    (OUT_DIR / f"bench-{stamp}.txt").write_text("\n".join(out) + "\n")
    raw = {
        "environment": env,
        "quick": args.quick,
        "rows": {
            model: {
                key: {
                    "label": r.label,
                    "command": r.command,
                    "samples": [s.__dict__ | {"stdout": "", "stderr": ""} for s in r.measurement.samples],
                }
                for key, r in rows.items()
            }
            for model, rows in rows_by_model.items()
        },
        "targets": [t.__dict__ | {"status": t.status} for t in all_targets],
    }
    (OUT_DIR / f"bench-{stamp}.json").write_text(json.dumps(raw, indent=1))
    print(f"(table saved to bench/out/bench-{stamp}.txt, raw samples to bench/out/bench-{stamp}.json)")
    return 0


def _subset_folder(folder: Path, count: int) -> Path:
    """A folder with copies of the first ``count`` small models."""
    subset = folder.parent / f"small{count}"
    subset.mkdir(exist_ok=True)
    for path in sorted(folder.glob("*.onnx"))[:count]:
        copy = subset / path.name
        if not copy.exists() or copy.stat().st_mtime < path.stat().st_mtime:
            shutil.copyfile(path, copy)
    return subset


if __name__ == "__main__":
    sys.exit(main())
