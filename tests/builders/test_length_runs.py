"""The CPU runtime cuts a merged batch into runs of similar length (``max_padding_ratio``), so a short message is not
padded to the longest one in its batch: the pure cutting rule here; answers through Triton in test_serving.py."""
from __future__ import annotations

import importlib.util
import sys
import types
from pathlib import Path

import pytest

RUNTIME = Path(__file__).resolve().parents[2] / "builders" / "runtime" / "onnx_model.py"


@pytest.fixture(scope="module")
def length_runs():
    # the runtime imports Triton's python-backend module at the top; length_runs itself does not use it
    stub = types.ModuleType("triton_python_backend_utils")
    saved = sys.modules.get(stub.__name__)
    sys.modules[stub.__name__] = stub
    try:
        spec = importlib.util.spec_from_file_location("onnx_model_under_test", RUNTIME)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        if saved is None:
            del sys.modules[stub.__name__]
        else:
            sys.modules[stub.__name__] = saved
    return module.length_runs


def padded_over_real(sizes, run):
    rows = sum(sizes[i][0] for i in run)
    return rows * max(sizes[i][1] for i in run) / sum(sizes[i][0] * sizes[i][1] for i in run)


def test_every_request_is_in_exactly_one_run_and_each_run_keeps_the_ratio(length_runs):
    sizes = [(1, n) for n in (13, 255, 40, 41, 200, 14, 90, 97, 15, 250)] + [(3, 60)]
    runs = length_runs(sizes, 1.25)
    assert sorted(i for run in runs for i in run) == list(range(len(sizes)))
    assert all(padded_over_real(sizes, run) <= 1.25 for run in runs)
    assert len(runs) < len(sizes)  # similar lengths still share a run
    assert [13, 14, 15] == [sizes[i][1] for i in runs[0]]


def test_ratio_zero_or_one_request_is_one_run(length_runs):
    sizes = [(1, 13), (1, 255), (2, 40)]
    assert length_runs(sizes, 0) == [[0, 2, 1]]  # sorted by length, one run padded to the longest
    assert length_runs([(4, 9)], 1.25) == [[0]]
    assert length_runs([(1, 10), (1, 10), (1, 10)], 1.0) == [[0, 1, 2]]  # equal lengths never need padding
