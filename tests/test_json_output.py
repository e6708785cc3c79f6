"""The JSON writer: indented, plain lists on one line, numbers written the same way everywhere."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from relulint.findings import _array, _jsonable, json_number
from relulint.report.json import dumps


def test_outer_levels_are_opened_up_and_records_stay_on_one_line():
    document = {"a": [1, 2.5, "x", None, True], "b": {"c": [], "d": {}, "e": [{"f": 1}, [1, 2]]}, "g": 'h\u00e9"'}
    text = dumps(document)
    assert json.loads(text) == document
    assert text.splitlines() == [
        "{",
        '  "a": [1, 2.5, "x", null, true],',
        '  "b": {',
        '    "c": [],',
        '    "d": {},',
        '    "e": [',
        '      {"f": 1},',
        "      [1, 2]",
        "    ]",
        "  },",
        '  "g": "h\u00e9\\""',
        "}",
    ]


def test_a_deep_collection_of_records_has_one_record_a_line():
    layers = {"fc1": {"dead": 1, "max": [0.5, 0.0]}, "fc2": {"dead": 0, "max": [1.0]}}
    document = {"models": [{"path": "m.onnx", "probe": {"inputs": "synthetic", "layers": layers}}]}
    lines = dumps(document).splitlines()
    assert '          "fc1": {"dead": 1, "max": [0.5, 0.0]},' in lines
    assert '          "fc2": {"dead": 0, "max": [1.0]}' in lines
    assert json.loads("\n".join(lines)) == document


def test_not_a_number_is_refused_like_json_does():
    try:
        dumps({"x": [float("nan")]})
    except ValueError:
        return
    raise AssertionError("NaN was written")


FLOATS = arrays(np.float32, st.integers(0, 40), elements=st.floats(width=32, allow_nan=True, allow_infinity=True))


@settings(max_examples=300, deadline=None)
@given(FLOATS)
def test_arrays_are_written_as_each_number_would_be(values):
    """The vectorized path agrees with the one-number path: six decimals, six significant digits
    below 1e-4, NaN and infinities as strings (the last digit may differ only on an exact tie)."""
    got = _array(values)
    expected = [json_number(v) for v in values.astype(np.float64).tolist()]
    assert len(got) == len(expected)
    for a, b in zip(got, expected, strict=True):
        if isinstance(b, str):
            assert a == b
        else:
            assert isinstance(a, float) and math.isclose(a, b, rel_tol=1e-5, abs_tol=1.5e-6)


def test_integer_boolean_and_nested_arrays():
    assert _jsonable(np.array([[1, 2], [3, 4]], np.int64)) == [[1, 2], [3, 4]]
    assert _jsonable(np.array([True, False])) == [True, False]
    assert _jsonable(np.array(2.5)) == 2.5
    assert _jsonable(np.array([0.1234567, 3e-7, -0.0], np.float64)) == [0.123457, 3e-07, -0.0]


def test_unit_metrics_keys_do_not_change_with_the_rule_selection(tmp_path):
    from relulint.config import Config
    from relulint.engine import analyse

    model = Path(__file__).resolve().parent.parent / "examples" / "dying_mlp.onnx"
    keys = {}
    for select in (("RL1",), ("RL2",), ("RL4",), ("RL",)):
        result = analyse(str(model), Config(probe=False, select=select))
        keys[select] = [sorted(layer["metrics"]) for layer in result.layers]
    assert len({repr(value) for value in keys.values()}) == 1, keys
    assert "at_risk" in keys[("RL1",)][0] and "weight_std" in keys[("RL4",)][0]
