"""False alarms on real models: relulint's verdicts on trained ONNX models against the truth.

    python bench/corpus.py            # every corpus model (about 15 minutes on 2 cores, first run longer)
    python bench/corpus.py --quick    # four small models (about 2 minutes)

For each model (bench/corpus/models.py): realistic inputs made by its package's own preprocessing
(saved as the .npz relulint's --data takes), the true dead units on them measured with onnxruntime
alone (bench/corpus/truth.py), then the relulint CLI in its default run, with data-free alternatives
chosen by flags, and with --data; each run's dead units are compared unit by unit with the truth.
The table is printed and saved to bench/out/corpus.md, every figure to bench/out/corpus.json.
See bench/README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from corpus import inputs, lint, models, truth  # noqa: E402

from relulint.config import Config  # noqa: E402
from relulint.probe.structured import MIN_SIGNAL  # noqa: E402

BENCH_DIR = Path(__file__).resolve().parent
OUT_DIR = BENCH_DIR / "out"
INPUTS_VERSION = "1"  # bump when a recipe in inputs.py changes, so cached .npz files are rebuilt


def realistic_inputs(model: models.CorpusModel, path: Path) -> tuple[Path, inputs.Data]:
    """The --data file of a model, made once per recipe version and model file."""
    data_path = models.CACHE / f"{model.name}.npz"
    layout_path = models.CACHE / f"{model.name}.layout.json"
    stamp = f"{INPUTS_VERSION} {models.sha256_of(path)}"
    if data_path.exists() and layout_path.exists():
        layout = json.loads(layout_path.read_text())
        if layout.get("stamp") == stamp:
            with np.load(data_path) as stored:
                arrays = {name: stored[name] for name in stored.files}
            return data_path, inputs.Data(arrays, layout["batch_axes"], layout["whole"], layout["what"])
    data = inputs.make(model, path)
    np.savez(data_path, **data.arrays)
    layout_path.write_text(
        json.dumps({"stamp": stamp, "batch_axes": data.batch_axes, "whole": data.whole, "what": data.what})
    )
    return data_path, data


# The run families, in table order: the totals add up each family over the models.
FAMILIES = (
    "default",
    "--input-dist normal (no domain)",
    "--input-dist structured (no domain)",
    "--input-dist smooth (no domain)",
    "--input-dist strokes / harmonic (no domain)",
    "uniform over the domain",
    "--input-range of the domain",
    "--data",
    "--data, every sample, long timeout",
)


def runs_for(
    model: models.CorpusModel, data_path: Path, main_input: str, shape: tuple[int, ...]
) -> list[tuple[str, str, list[str]]]:
    """(family, label, flags): the default run, data-free runs (structured ones, and two told the input's
    domain and shape), and --data, once in its default run and once with every sample and a long timeout."""
    low, high = model.domain
    told = [f"--input-shape={shape}" for shape in model.shapes] + list(model.told)
    more = " + shape" if model.shapes else ""
    more += " + " + " ".join(model.told) if model.told else ""
    runs = [(FAMILIES[0], "default", [])]
    # The data-free distributions the default is chosen from (the default itself is not run twice).
    for family, kind in ((FAMILIES[1], "normal"), (FAMILIES[2], "structured"), (FAMILIES[3], "smooth")):
        if kind != Config().input_dist:
            runs.append((family, f"--input-dist {kind}", [f"--input-dist={kind}"]))
    if len(shape) == 4:  # images: pages
        runs.append((FAMILIES[4], "--input-dist strokes", ["--input-dist=strokes"]))
    elif len(shape) in (2, 3) and shape[-1] >= MIN_SIGNAL:  # a signal: sound
        runs.append((FAMILIES[4], "--input-dist harmonic", ["--input-dist=harmonic"]))
    runs += [
        (FAMILIES[5], f"uniform:{low:g},{high:g}{more}", [f"--input-dist=uniform:{low:g},{high:g}", *told]),
        (FAMILIES[6], f"input-range {low:g},{high:g}{more}", [f"--input-range={main_input}={low:g},{high:g}", *told]),
        (FAMILIES[7], "--data", ["--data", str(data_path)]),
        # A long timeout: this row asks whether the verdicts are exact on every sample, not how fast they come.
        (FAMILIES[8], "--data --probe-timeout 900", ["--data", str(data_path), "--probe-timeout=900"]),
    ]
    return runs


def measure_model(model: models.CorpusModel, verbose: bool, only: list[str]) -> dict:
    path = models.fetch(model)
    data_path, data = realistic_inputs(model, path)
    start = time.perf_counter()
    true_layers = truth.measure(
        path, data.batches, batch_size=4 if data.arrays[next(iter(data.arrays))].ndim == 4 else 64
    )
    truth_seconds = time.perf_counter() - start
    main_input = next(name for name, axis in data.batch_axes.items() if axis is not None)
    samples = data.samples if not data.whole else int(data.arrays[main_input].shape[0])
    verdicts = []
    shape = data.arrays[main_input].shape
    for family, run, flags in runs_for(model, data_path, main_input, shape):
        if only and not any(word in run for word in only):
            continue
        result = lint.run_relulint(path, flags)
        verdict = lint.compare(run, flags, result, true_layers)
        verdict.family = family
        verdicts.append(verdict)
        if verbose:
            print(
                f"  {model.name} {run}: exit {verdict.exit_code}, {verdict.seconds:.1f} s {verdict.error}", flush=True
            )
    return {
        "model": model.name,
        "what": model.what,
        "origin": model.origin,
        "sha256": models.sha256_of(path),
        "inputs": data.what,
        "samples": samples,
        "truth_seconds": round(truth_seconds, 1),
        "true_layers": len(true_layers),
        "true_units": sum(layer.units for layer in true_layers),
        "true_dead": sum(int(layer.dead.sum()) for layer in true_layers),
        "true_always_zero": sum(int(layer.no_gradient.sum()) for layer in true_layers),
        "true_by_layer": [
            {
                "output": layer.output,
                "op": layer.op,
                "units": layer.units,
                "dead": int(layer.dead.sum()),
                "always_zero": int(layer.no_gradient.sum()) if layer.variant else None,
                "pooled": layer.pooled,
            }
            for layer in true_layers
        ],
        "runs": [_plain(vars(verdict)) for verdict in verdicts],
    }


def _plain(value):
    if isinstance(value, dict):  # Counters too, as plain dicts
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    return value


def _counts(counter: dict, keys=("error", "warning", "note")) -> str:
    return "/".join(str(counter.get(key, 0)) for key in keys)


def _rules(counter: dict) -> str:
    short = {"error": "E", "warning": "W", "note": "N"}
    parts = []
    for key, count in sorted(counter.items()):
        rule, severity = key.split(":")
        parts.append(
            f"{rule}{short.get(severity, severity)}×{count}" if count > 1 else f"{rule}{short.get(severity, severity)}"
        )
    return " ".join(parts)


def _part(total: int, part: int, what: str) -> str:
    return f"{total} ({part} {what})" if part else str(total)


def table(results: list[dict]) -> str:
    lines = [
        "| model | run | probe | layers probed / true | dead: relulint / true | false-dead | missed | "
        "layers exact | findings E/W/N | false E/W | rules (E error, W warning, N note) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for result in results:
        for run in result["runs"]:
            probe = f"{run['probe_samples']} {run['probe_inputs']}" if run["probe_ran"] else "did not run"
            if run["error"]:
                probe = f"{probe}; exit {run['exit_code']}"
            lines.append(
                f"| {result['model']} | {run['run']} | {probe} | {run['probed_layers']} / {result['true_layers']} | "
                f"{run['claimed_dead']} / {run['true_dead']} | {_part(run['false_dead'], run.get('false_dead_pooled', 0), 'pooled')} | "
                f"{_part(run['missed_dead'], run.get('misread_missed', 0), 'misread')} | "
                f"{run['layers_equal']} / {run['matched_layers']} | {_counts(run['severities'])} | "
                f"{_counts(run['false_findings'], ('error', 'warning'))} | {_rules(run['rules'])} |"
            )
    return "\n".join(lines)


def totals(results: list[dict]) -> str:
    by_run: dict[str, dict] = {}
    for result in results:
        for run in result["runs"]:
            key = run["family"]
            row = by_run.setdefault(
                key, {"false_dead": 0, "missed": 0, "error": 0, "false_error": 0, "warning": 0, "no_probe": 0}
            )
            row["false_dead"] += run["false_dead"]
            row["missed"] += run["missed_dead"]
            row["error"] += run["severities"].get("error", 0)
            row["warning"] += run["severities"].get("warning", 0)
            row["false_error"] += run["false_findings"].get("error", 0)
            row["no_probe"] += int(not run["probe_ran"])
    lines = [
        "| run | false-dead units | missed dead units | errors | of them refuted | warnings | probe did not run |",
        "|---|---|---|---|---|---|---|",
    ]
    for key, row in sorted(by_run.items(), key=lambda item: FAMILIES.index(item[0])):
        models_in = sum(1 for r in results if any(run["family"] == key for run in r["runs"]))
        lines.append(
            f"| {key} | {row['false_dead']} | {row['missed']} | {row['error']} | {row['false_error']} | "
            f"{row['warning']} | {row['no_probe']} of {models_in} |"
        )
    return "\n".join(lines)


def header() -> str:
    import onnxruntime

    commit = subprocess.run(
        ["git", "-C", str(BENCH_DIR), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    version = subprocess.run(
        [sys.executable, "-m", "relulint", "--version"], capture_output=True, text=True
    ).stdout.strip()
    return (
        f"{version or 'relulint ?'} at {commit or '?'}; onnxruntime {onnxruntime.__version__}, numpy {np.__version__}"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="only the models marked quick (small and fast)")
    parser.add_argument("--models", nargs="+", help="names of corpus models to measure")
    parser.add_argument("-v", "--verbose", action="store_true", help="print each relulint run as it ends")
    parser.add_argument("--runs", nargs="+", default=[], help="only the runs whose label contains one of these words")
    args = parser.parse_args()
    chosen = [m for m in models.MODELS if (not args.quick or m.quick) and (not args.models or m.name in args.models)]
    if args.models and len(chosen) != len(args.models):
        known = ", ".join(m.name for m in models.MODELS)
        parser.error(f"unknown model in {args.models}; the corpus has: {known}")
    os.environ.setdefault("PYTHONWARNINGS", "ignore")
    results = []
    for model in chosen:
        print(f"{model.name} ({model.origin})", flush=True)
        results.append(measure_model(model, args.verbose, args.runs))
    text = "\n\n".join(
        [
            f"False alarms on {len(results)} corpus models; {header()}",
            "Per model and run (dead units compared unit by unit with onnxruntime on the realistic inputs):",
            table(results),
            "All models:",
            totals(results),
            "Models and their realistic inputs:",
            "\n".join(
                f"- {r['model']}: {r['what']}; {r['origin']}; inputs: {r['inputs']}; "
                f"{r['true_dead']} of {r['true_units']} units in {r['true_layers']} layers never positive"
                + (
                    f" ({r['true_always_zero']} when a variant counts only if always 0)"
                    if r["true_always_zero"] != r["true_dead"]
                    else ""
                )
                for r in results
            ),
        ]
    )
    print("\n" + text)
    OUT_DIR.mkdir(exist_ok=True)
    (OUT_DIR / "corpus.md").write_text(text + "\n")
    (OUT_DIR / "corpus.json").write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
