"""Benchmark logic that needs no server: targets, the SLO gate, settings, payload files, percentiles."""
from __future__ import annotations

import os

import numpy as np
import pytest

from benchmarks.compare import Plan, summarize
from benchmarks.compare_report import evaluate_targets, ladder_table
from benchmarks.load_settings import LoadSettings
from benchmarks.loadtest import GateBudgets, check_gate
from benchmarks.payloads import InputSpec, load_payloads, make_payloads, save_payloads
from common.config import validate
from common.errors import UserError


def row(config, family, c, rps, p50, p99, variant=None, requests=100):
    return {"config": config, "family": family, "concurrency": c, "throughput_rps": rps, "p50_ms": p50, "p99_ms": p99,
            "requests": requests, "model_variant": variant, "errors": 0}


def test_targets_are_ratios_inside_one_run_and_say_met_or_missed_with_the_numbers():
    rows = [row("fastapi-pytorch", "baseline", 64, 200, 300, 400),
            row("triton-grpc-dynamic-batching", "triton", 64, 1100, 50, 90),
            row("tuning:defaults", "tuning", 1, 250, 1.6, 1.9, "defaults"),
            row("onnxruntime-fp32", "in-process", 1, 900, 1.2, 1.5),
            row("onnxruntime-int8-batched", "in-process", 64, 1400, 40, 60)]
    t1, t2, t3 = evaluate_targets(rows, [1, 64])
    assert t1["met"] and "= 5.50x" in t1["numbers"] and "= 0.23x" in t1["numbers"]
    assert t2["met"] and t2["numbers"] == ("triton-grpc-dynamic-batching c=64 1100 req/s vs onnxruntime-int8-batched "
                                           "c=64 1400 seq/s = 0.79x")
    assert t3["met"] and "+0.40 ms" in t3["numbers"]
    rows[1]["p99_ms"] = 150  # p99 no longer <= 1/4 of the baseline's
    assert not evaluate_targets(rows, [1, 64])[0]["met"]
    rows[4]["throughput_rps"] = 1500  # 1100 / 1500 = 0.73 < 0.75
    assert not evaluate_targets(rows, [1, 64])[1]["met"]


def test_the_int8_variant_is_not_compared_with_fp32_at_concurrency_one():
    rows = [row("onnxruntime-fp32", "in-process", 1, 900, 1.2, 1.5),
            row("tuning:l4_int8", "tuning", 1, 400, 0.9, 1.2, "l4_int8"),
            row("tuning:defaults", "tuning", 1, 250, 2.0, 2.5, "defaults")]
    target = evaluate_targets(rows, [1])[-1]
    assert "tuning:defaults p50 2.00 ms" in target["numbers"] and not target["met"]


def test_the_ladder_reports_each_step_against_the_previous_one():
    labels = {"l0": "first", "defaults": "today", "b_x": "a branch"}
    rows = [row("tuning:l0", "tuning", 1, 100, 4.0, 500.0), row("tuning:l0", "tuning", 64, 500, 80, 600),
            row("tuning:defaults", "tuning", 1, 200, 3.0, 5.0), row("tuning:defaults", "tuning", 64, 1000, 50, 90),
            row("tuning:b_x", "tuning", 1, 150, 3.5, 6.0), row("tuning:b_x", "tuning", 64, 2000, 40, 80)]
    lines = ladder_table(rows, labels, 64)
    assert lines[2].startswith("| first |") and lines[2].endswith("|  |")
    assert lines[3].startswith("| today |") and "+100 % req/s" in lines[3]
    assert lines[4].startswith("| a branch |") and lines[4].endswith("|  |"), "branches are not a ladder step"


def test_percentiles_of_a_measurement():
    summary = summarize(list(range(1, 101)), 123.4, {"RuntimeError: HTTP 503": 2})
    assert summary["p50_ms"] == 50.5 and summary["p99_ms"] == pytest.approx(99.01)
    assert summary["errors"] == 2 and summary["error_kinds"] == [{"error": "RuntimeError: HTTP 503", "count": 2}]
    assert summarize([], 0.0, {})["p99_ms"] is None


def test_the_slo_gate_names_what_was_exceeded():
    result = {"p99_ms": 42.0, "requests": 1000, "errors": 20, "error_rate": 0.02}
    assert check_gate(result, GateBudgets()) == []
    assert check_gate(result, GateBudgets(max_p99_ms=50, max_error_rate=0.05)) == []
    problems = check_gate(result, GateBudgets(max_p99_ms=10, max_error_rate=0.01))
    assert problems == ["p99 42.0 ms exceeds the budget of 10 ms",
                        "error rate 2.00% (20 of 1000) exceeds the budget of 1.00%"]
    empty = {"p99_ms": None, "requests": 0, "errors": 0, "error_rate": 0.0}
    assert check_gate(empty, GateBudgets(max_p99_ms=100)) == ["no successful requests, so p99 is undefined"]


def test_budgets_and_load_settings_that_make_no_sense_are_refused():
    with pytest.raises(UserError, match=r"max_error_rate: Input should be less than or equal to 1 \(got 3\)"):
        validate(GateBudgets, {"max_error_rate": 3}, "budgets")
    with pytest.raises(UserError, match=r"max_p99_ms: Input should be greater than 0"):
        validate(GateBudgets, {"max_p99_ms": -1}, "budgets")
    with pytest.raises(UserError, match=r"step_users \(32\) must not exceed users \(16\)"):
        validate(LoadSettings, {"payload_file": "x", "users": 16, "shape": "step", "step_users": 32}, "load settings")
    settings = LoadSettings(payload_file="p.npz", users=4)
    assert LoadSettings.model_validate_json(settings.to_env()["LOADTEST_SETTINGS"]) == settings


def test_payloads_round_trip_without_pickle_including_strings(tmp_path):
    specs = [InputSpec("text", "BYTES", (1,))]
    texts = make_payloads("textclf_text", specs, 5, seed=3)
    ids = make_payloads("textclf", [InputSpec("input_ids", "INT64", (-1,))], 5, seed=3, seq_len=64)
    images = make_payloads("digits", [InputSpec("image", "FP32", (1, 8, 8))], 5, seed=3)
    assert all(p["input_ids"].shape == (1, 64) and p["input_ids"][0, 0] == 2 for p in ids)
    assert images[0]["image"].shape == (1, 1, 8, 8) and images[0]["image"].max() <= 16
    for name, items in (("texts", texts), ("ids", ids), ("images", images)):
        path = save_payloads(tmp_path / f"{name}.npz", items)
        back = load_payloads(path)
        assert len(back) == 5
        for a, b in zip(items, back):
            for key in a:
                assert a[key].shape == b[key].shape and np.array_equal(a[key], b[key]), (name, key)
    with np.load(tmp_path / "texts.npz", allow_pickle=False) as data:
        assert data["0/text"].dtype.kind == "S"
    with pytest.raises(UserError, match="must be positive"):
        make_payloads("digits", [InputSpec("image", "FP32", (1, 8, 8))], 0)


def test_compare_rejects_a_sweep_that_makes_no_sense():
    from argparse import Namespace

    from benchmarks.compare import run

    with pytest.raises(UserError, match=r"--concurrency '1,x': expected comma-separated positive integers"):
        run(Namespace(model="textclf", concurrency="1,x", duration=1, warmup=0, seq_len=64, ladder_rounds=1))
    with pytest.raises(UserError, match=r"--ladder-rounds must be at least 1"):
        run(Namespace(model="textclf", concurrency="1", duration=1, warmup=0, seq_len=64, ladder_rounds=0))
    assert Plan([1], 64, 1.0, 0.0).ladder_rounds == 2


def test_an_ensembles_steps_are_listed_in_pipeline_order_with_nested_ensembles_expanded():
    from benchmarks.triton_stats import _delta, _Totals, ensemble_steps

    def step(name):
        return {"model_name": name, "model_version": -1}

    configs = {
        "text": {"platform": "ensemble", "ensemble_scheduling": {"step": [step("tok"), step("inner"), step("labels")]}},
        "inner": {"platform": "ensemble", "ensemble_scheduling": {"step": [step("model"), step("tok")]}},
        "tok": {"backend": "python"}, "model": {"platform": "onnxruntime_onnx"}, "labels": {"backend": "python"},
    }
    assert ensemble_steps(configs["text"], configs.__getitem__) == ["tok", "model", "labels"]
    assert ensemble_steps(configs["model"], configs.__getitem__) == []

    before = _Totals(success=10, executions=4, inferences=10, queue_ns=1_000_000, compute_infer_ns=5_000_000)
    after = _Totals(success=30, executions=8, inferences=30, queue_ns=3_000_000, compute_infer_ns=45_000_000)
    batched = _delta(before, after, batches=True)
    assert batched["requests"] == 20 and batched["avg_batch_size"] == 5.0
    assert batched["queue_ms"] == 0.1 and batched["compute_infer_ms"] == 2.0
    assert _delta(before, after, batches=False)["avg_batch_size"] is None  # an ensemble's executions are its requests
    assert _delta(after, after, batches=True) == {"requests": 0}


def _hang_after_quit(tmp_path, grace_s: float, hang: str):
    """Run the locustfile's quit hook in a gevent-patched process that then hangs as ``hang`` says."""
    import subprocess
    import sys
    from pathlib import Path

    save_payloads(tmp_path / "p.npz", [{"input_ids": np.ones((1, 4), dtype=np.int64)}])
    settings = LoadSettings(payload_file=str(tmp_path / "p.npz"), users=1, protocol="grpc")
    script = ("from gevent import monkey; monkey.patch_all()\n"
              "import benchmarks.locustfile as lf\n"
              f"lf.EXIT_GRACE_S = {grace_s}\n" + hang)
    return subprocess.run([sys.executable, "-c", script], cwd=Path(__file__).resolve().parents[2],
                          env={**os.environ, **settings.to_env()}, capture_output=True, text=True, timeout=30)


def test_a_locust_process_that_hangs_after_its_final_statistics_is_ended_with_its_exit_code(tmp_path):
    """The watchdog the locustfile starts on Locust's ``quit`` event: a process stuck in shutdown still ends, with
    Locust's exit code and every thread's stack in its output."""
    done = _hang_after_quit(tmp_path, 0.5, "lf._exit_even_if_shutdown_hangs(exit_code=3)\n"
                                           "monkey.get_original('time', 'sleep')(60)  # a shutdown that never ends\n")
    assert done.returncode == 3, done.stderr
    assert "after its final statistics" in done.stderr and "Thread 0x" in done.stderr


def test_a_hang_in_late_interpreter_finalization_is_still_ended(tmp_path):
    """Past the point where Python threads can take the GIL, faulthandler's native timer ends the process."""
    done = _hang_after_quit(tmp_path, 0.2, (
        "class Stuck:\n"
        "    def __del__(self, sleep=monkey.get_original('time', 'sleep')):\n"
        "        sleep(60)  # a finalizer that never returns\n"
        "import builtins; builtins.stuck = Stuck()  # destroyed only in late finalization\n"
        "lf._exit_even_if_shutdown_hangs(exit_code=3)\n"))
    assert done.returncode != 0 and "Timeout" in done.stderr, (done.returncode, done.stderr[-2000:])
