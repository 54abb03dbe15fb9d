"""``python -m benchmarks compare --model minilm``: the row, target and report logic on made-up rows (fast), the
sentences every configuration gets, the peers' request bodies, and a tiny ``--quick`` run end to end (slow)."""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from benchmarks.compare_minilm import (FP32_AGREEMENT, MinilmPlan, agreement, make_row, plan_from_args)
from benchmarks.compare_minilm_report import evaluate_targets, write_outputs
from benchmarks.peers.infinity import PeerUnavailable, installed, server_command
from benchmarks.sentences import MAX_TOKENS, benchmark_sentences, token_counts
from tests.builders.test_minilm import minilm_build  # noqa: F401  (the session's one MiniLM build)

ROOT = Path(__file__).resolve().parents[2]


def row(config: str, family: str, concurrency: int, rps: float, p50: float, p99: float, batch: int = 1,
        precision: str = "fp32", requests: int | None = None) -> dict:
    requests = 3 * concurrency if requests is None else requests  # enough per caller to count, unless told
    r = make_row(config, family, "grpc", concurrency, batch, [p50] * requests, rps, {}, 100.0 * batch, "test",
                 precision=precision)
    r["p50_ms"], r["p99_ms"] = p50, p99
    return r


def args(**changes) -> argparse.Namespace:
    base = dict(concurrency="1,4,16,64", duration=4.0, warmup=1.0, quick=False, configs=None, skip=[],
                infinity_venv=None)
    base.update(changes)
    return argparse.Namespace(**base)


def test_rows_count_sentences_and_tokens_per_request():
    single = make_row("infinity", "peer", "http-json", 4, 1, [10.0, 20.0, 30.0], 50.0, {}, 96.0, "x")
    mix = make_row("infinity", "peer", "http-json", 4, 32, [10.0], 5.0, {"HTTP 500": 2}, 32 * 96.0, "x")
    assert single["sentences_per_s"] == 50.0 and single["tokens_per_s"] == 4800.0 and single["p50_ms"] == 20.0
    assert mix["sentences_per_s"] == 160.0 and mix["tokens_per_s"] == 15360.0 and mix["errors"] == 2
    for key in ("config", "protocol", "concurrency", "throughput_rps", "p50_ms", "p95_ms", "p99_ms", "errors"):
        assert key in single


def test_targets_met_missed_and_not_evaluated_with_the_reason():
    rows = [row("triton-grpc-text", "triton", 64, 600, 40, 90), row("triton-grpc-text", "triton", 1, 80, 9, 12),
            row("infinity", "peer", 64, 400, 80, 100), row("fastapi-sentence-transformers", "baseline", 64, 150, 300, 500),
            row("onnxruntime-fp32", "in-process", 64, 700, 50, 60), row("sentence-transformers", "in-process", 1, 90, 11, 13),
            row("triton-grpc-text", "triton", 4, 9999, 1, 1, batch=32),  # batch-mix rows never count for targets
            row("triton-http-text", "triton", 64, 9999, 1, 1, requests=64)]  # one request per caller: too thin
    targets = evaluate_targets(rows, [1, 4, 16, 64])
    assert [t["met"] for t in targets] == [True, False, True, True]
    assert "600 vs 400 sentences/s = 1.50x" in targets[0]["numbers"]
    assert "600 vs 150 sentences/s = 4.00x" in targets[1]["numbers"] and "p99 90.0 vs 500.0 ms = 0.18x" in targets[1]["numbers"]
    assert "0.86x" in targets[2]["numbers"] and "p50 9.00 ms vs sentence-transformers 11.00 ms" in targets[3]["numbers"]
    without = [r for r in rows if r["config"] != "infinity"]
    problems = [{"config": "infinity", "reason": "infinity: the server did not start within 300 s (boom)"}]
    first = evaluate_targets(without, [1, 4, 16, 64], problems)[0]
    assert first["met"] is None and "not evaluated: infinity: infinity: the server did not start" in first["numbers"]


def test_a_peer_that_disagrees_with_sentence_transformers_is_stopped_naming_it():
    rng = np.random.default_rng(0)
    reference = rng.normal(size=(4, 384))
    sentences = ["a", "b", "c", "d"]
    assert agreement("x", reference * 3, reference, sentences, FP32_AGREEMENT)["min_cosine"] == pytest.approx(1.0)
    bad = reference.copy()
    bad[2] = rng.normal(size=384)
    with pytest.raises(PeerUnavailable, match=r"^infinity: embeddings disagree with sentence-transformers \(cosine .* "
                                              r"< 0.999 on 'c'\)"):
        agreement("infinity", bad, reference, sentences, FP32_AGREEMENT)
    with pytest.raises(PeerUnavailable, match=r"returned embeddings of shape \[4, 383\]"):
        agreement("onnxruntime-int8", reference[:, :383], reference, sentences, 0.99)


def test_the_ladder_table_says_what_each_step_bought():
    from benchmarks.compare_minilm_variants import VARIANTS, ladder_table

    rows = []
    for i, variant in enumerate(VARIANTS):
        for c in (1, 64):
            rows.append(row(f"tuning:{variant.name}", "tuning", c, 100.0 * (i + 1) if c == 64 else 50, 10, 20))
    table = ladder_table(rows, 64)
    assert len(table) == 2 + len(VARIANTS)
    assert table[2].startswith(f"| {VARIANTS[0].label} |") and table[2].endswith("|  |")  # the first step: no change
    assert table[3].endswith("| +100 % sentences/s |")  # 200 vs 100
    assert table[8].endswith("| +75 % vs defaults |")  # the first branch (700) against the defaults l3 (400)
    assert ladder_table([r for r in rows if r["concurrency"] == 1], 64) == []


def test_each_ladder_step_is_judged_at_its_own_precision():
    """An INT8 step is compared with the in-process INT8 limit, never the FP32 one (a report once set the INT8 step
    against ONNX Runtime FP32)."""
    from benchmarks.compare_minilm_variants import VARIANTS

    int8 = [v for v in VARIANTS if v.needs == "model.int8.onnx"]
    assert int8 and all(v.precision == "int8" for v in int8)
    assert all(v.precision is None for v in VARIANTS if v.needs is None)
    rows = [row("tuning:l5", "tuning", 64, 142, 400, 500, precision="int8"),
            row("onnxruntime-fp32", "in-process", 1, 86, 10, 12),
            row("onnxruntime-int8", "in-process", 1, 120, 8, 10, precision="int8")]
    third = evaluate_targets(rows, [1, 4, 16, 64])[2]
    assert "tuning:l5 c=64 142 vs onnxruntime-int8 c=1 120 sentences/s" in third["numbers"]


def test_plan_quick_subsets_and_bad_flags():
    quick = plan_from_args(args(quick=True, configs="sentence-transformers,triton"))
    assert quick.concurrency == [1, 4] and quick.duration_s == 2.0 and quick.groups == ("sentence-transformers", "triton")
    assert plan_from_args(args(skip=["inprocess", "infinity", "ladder"])).groups == ("triton", "fastapi")
    assert plan_from_args(args()).concurrency == [1, 4, 16, 64]
    from common.errors import UserError

    with pytest.raises(UserError, match="--configs 'tritn': unknown group tritn; expected"):
        plan_from_args(args(configs="tritn"))
    with pytest.raises(UserError, match="--concurrency '0,4'"):
        plan_from_args(args(concurrency="0,4"))


def test_sentences_are_real_varied_and_within_the_models_limit():
    sentences = benchmark_sentences(64)
    assert sentences == benchmark_sentences(64) and len(set(sentences)) == 64
    counts = token_counts(sentences)
    assert max(counts) <= MAX_TOKENS and min(counts) >= 3
    assert sum(c >= 128 for c in counts) >= 8  # every fourth one is a long, joined sentence
    assert sum(c < 64 for c in counts) >= 16


def test_peer_request_bodies_and_the_infinity_command(tmp_path):
    from benchmarks.loadgen import LoadSpec, http_bodies
    from benchmarks.payloads import save_payloads

    payloads = [{"text": np.array([[b"hello there"], [b"refund"]], dtype=np.object_)}]
    save_payloads(tmp_path / "p.npz", payloads)
    for target, path, body in (("fastapi-embed", "/embed", {"sentences": ["hello there", "refund"]}),
                               ("infinity", "/embeddings", {"input": ["hello there", "refund"], "model": "minilm"})):
        spec = LoadSpec(target=target, url="127.0.0.1:1", model="minilm", payload_file=str(tmp_path / "p.npz"),
                        concurrency=1, duration_s=1)
        route, bodies = http_bodies(spec, payloads)
        assert route == path and json.loads(bodies[0][0]) == body
    assert installed(tmp_path / "no-venv") is None
    from benchmarks.peers.infinity import InfinityEnv

    command = server_command(InfinityEnv(tmp_path, None, False), tmp_path / "model", 1234)
    assert command[1] == "v2" and "--engine" in command and command[command.index("--batch-size") + 1] == "32"
    assert command[command.index("--port") + 1] == "1234" and command[command.index("--host") + 1] == "127.0.0.1"


def test_windows_stretch_to_the_points_request_time_within_the_cap():
    from benchmarks.windows import RateBook, WindowPolicy

    policy = WindowPolicy(duration_s=4.0, warmup_s=1.0, max_duration_s=24.0)
    assert policy.fit(1, 1, None) == (1.0, 4.0)  # a configuration's first point: the minimum window
    assert policy.fit(16, 1, 400.0) == (1.0, 4.0)  # fast points keep it
    assert policy.fit(64, 1, 40.0) == (2.4, 8.0)  # 1.6 s per request: 5 request times, warm-up 1.5
    assert policy.fit(64, 1, 8.0) == (8.0, 24.0)  # 8 s per request: capped
    assert WindowPolicy(2.0, 0.5, max_duration_s=2.0).fit(64, 1, 8.0) == (8.0, 2.0)  # --quick keeps its short windows
    book = RateBook()
    book.note("infinity", 20.0), book.note("infinity", 12.0), book.note("fastapi", 5.0)
    assert book.best("infinity") == 20.0 and book.best("triton") is None
    assert book.last("infinity") == 12.0  # the estimate for its next point: rates fall with concurrency on a CPU
    from benchmarks.windows import refit_rate
    assert policy.fit(64, 1, refit_rate(0.0)) == (8.0, 24.0)  # nothing completed: the second window is the cap
    assert policy.fit(64, 1, refit_rate(24.0)) == (4.0, 13.33)  # 2.7 s per request measured: 5 of them
    report_row = row("triton-grpc-text", "triton", 64, 10, 5, 8, requests=100)
    from benchmarks.compare_minilm_report import enough_requests
    assert not enough_requests(report_row) and enough_requests(row("sentence-transformers", "in-process", 64, 1, 1, 1,
                                                                   requests=3))


def test_outputs_have_the_rows_report_and_plots(tmp_path):
    rows = [row("sentence-transformers", "in-process", c, 100 / c, 10 * c, 12 * c) for c in (1, 4)]
    rows += [row("triton-grpc-text", "triton", c, 50 * c, 5 * c, 8 * c) for c in (1, 4)]
    latencies = {(r["config"], r["concurrency"], r["batch"]): list(np.linspace(1, 20, 30)) for r in rows}
    plan = MinilmPlan([1, 4], 2.0, 0.5, quick=True)
    summary = write_outputs(rows, latencies, plan, {"cpu_model": "cpu", "cpu_cores": 2, "memory_gib": 1, "gpus": [],
                                                    "python": "3.11", "packages": {"torch": "2"}},
                            [{"config": "infinity", "reason": "infinity: not installed"}],
                            {"sentences": {"count": 64, "min_tokens": 14, "max_tokens": 256, "mean_tokens": 96}},
                            tmp_path, 12.0)
    assert json.loads((tmp_path / "compare-minilm.json").read_text()) == json.loads(json.dumps(rows))
    report = (tmp_path / "compare-minilm-report.md").read_text()
    assert "## Not measured" in report and "**infinity**: infinity: not installed" in report
    assert "| triton-grpc-text | grpc | 4 | 1 | 200 |" in report
    for name in ("compare-minilm_throughput.png", "compare-minilm_p99.png", "compare-minilm_latency_cdf.png"):
        assert (tmp_path / name).stat().st_size > 1000
    assert len(summary["target_lines"]) == 4


@pytest.mark.slow
def test_a_quick_compare_runs_end_to_end_and_reports_a_missing_peer(minilm_build, tmp_path):  # noqa: F811
    """sentence-transformers in-process, our Triton (the builders' MiniLM, built once per session) and the FastAPI
    baseline measured for real; Infinity pointed at an environment that does not exist, so its row stops with the
    reason while the others run."""
    repository, _ = minilm_build
    done = subprocess.run([sys.executable, "-m", "benchmarks", "compare", "--model", "minilm", "--quick",
                           "--configs", "sentence-transformers,triton,fastapi,infinity", "--repository", str(repository),
                           "--infinity-venv", str(tmp_path / "no-venv"), "--results-dir", str(tmp_path)], cwd=ROOT,
                          capture_output=True, text=True, timeout=400)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    rows = json.loads((tmp_path / "compare-minilm.json").read_text())
    configs = {(r["config"], r["concurrency"], r["batch"]) for r in rows}
    expected = {("sentence-transformers", 1, 1), ("sentence-transformers", 4, 1), ("sentence-transformers", 1, 8)}
    served_configs = ["triton-grpc-text", "triton-http-text", "triton-grpc-tokens", "fastapi-sentence-transformers"]
    if (repository / "minilm" / "configs" / "cpu_int8.pbtxt").is_file():  # the builders accepted INT8: served too
        served_configs += ["triton-grpc-text-int8", "triton-http-text-int8"]
    for served in served_configs:
        expected |= {(served, 1, 1), (served, 4, 1), (served, 2, 8)}
    assert configs == expected
    for r in rows:
        assert r["errors"] == 0, r
        if r["family"] != "in-process":
            floor = 0.99 if r["config"].endswith("int8") else 0.999  # INT8 peers are held to the INT8 bound
            assert r["check"]["min_cosine"] >= floor and r["cpu_server_cores"] is not None
    for served in ("triton-grpc-text", "triton-grpc-tokens", "fastapi-sentence-transformers"):
        assert any(r["requests"] > 0 for r in rows if r["config"] == served)
    text_c1 = next(r for r in rows if r["config"] == "triton-grpc-text" and r["concurrency"] == 1)
    assert [s["model"] for s in text_c1["server_side"]["steps"]] == ["minilm_tokenizer", "minilm"]
    report = (tmp_path / "compare-minilm-report.md").read_text()
    assert f"**infinity**: infinity: its environment ({tmp_path / 'no-venv'}) is not installed" in report
    assert "## Where the time goes inside Triton" in report and "| triton-grpc-text | 1 | 1 | minilm |" in report
    assert (tmp_path / "compare-minilm_throughput.png").is_file()
