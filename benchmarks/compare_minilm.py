"""``python -m benchmarks compare --model minilm``: the real all-MiniLM-L6-v2 served every way a user would pick,
side by side, in one run, on the same sentences.

Sentences: benchmarks/sentences.py (held-out support messages and longer ones up to the model's 256 tokens), the same
list for every configuration. Single-sentence requests at concurrency 1/4/16/64, plus a batch-32 request mix
(requests of 32 sentences at concurrency 4; in-process: encode calls of 32):

* in-process (``sentence-transformers``, ``onnxruntime-fp32``, ``onnxruntime-int8``): ``SentenceTransformer.encode``,
  and the builders' ONNX graphs run by ONNX Runtime with tokenization, both with ideal batching (concurrency ``c`` =
  one call of ``c`` sentences): the limit a server can approach;
* our Triton (``triton-grpc-text``, ``triton-http-text``: raw text through the ``minilm_text`` ensemble;
  ``triton-grpc-tokens``: pre-tokenized input straight to the ``minilm`` encoder), with Triton's own per-step
  breakdown (tokenizer and encoder: queue, compute, executed batch);
* ``fastapi-sentence-transformers``: FastAPI + uvicorn + sentence-transformers as teams write it
  (benchmarks/peers/fastapi_embed.py);
* ``infinity``: Infinity 0.0.78 from PyPI in its own virtual environment (benchmarks/peers/infinity.py), offline.

Before any timing counts, every peer embeds the same check sentences and must agree with sentence-transformers
(cosine >= 0.999; INT8 ONNX >= 0.99, the builders' INT8 acceptance bound): a peer that cannot be installed, cannot
start or disagrees stops with a message naming it and why, and the other rows still run. Served configurations are
driven by benchmarks/loadgen.py in its own process, so server and load-generator CPU are reported apart.

Writes under benchmarks/results/: ``compare-minilm.json`` (rows), ``compare-minilm-report.md`` (machine facts and
versions, targets met or missed with numbers, the rows, why any peer is missing), ``compare-minilm-summary.json`` and
PNG plots. ``--quick`` runs a small version (concurrency 1 and 4, short windows, few sentences) for tests.
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from benchmarks.compare import run_loadgen, summarize
from benchmarks.cpu_usage import CpuMeter
from benchmarks.peers.infinity import PeerUnavailable
from benchmarks.triton_stats import StatsWindow
from benchmarks.windows import RateBook, WindowPolicy, refit_rate
from common.errors import UserError
from common.net import free_port, wait_http_ok
from common.processes import stop as stop_process

ROOT = Path(__file__).resolve().parents[1]
GROUPS = ("sentence-transformers", "onnxruntime", "triton", "ladder", "fastapi", "infinity")
MODEL_NAMES = ("minilm", "minilm_tokenizer", "minilm_text")
CHECK_SENTENCES = 16
FP32_AGREEMENT, INT8_AGREEMENT = 0.999, 0.99


@dataclass
class MinilmPlan:
    concurrency: list[int]
    duration_s: float
    warmup_s: float
    sentences: int = 512
    batch: int = 32  # sentences per request in the batch mix
    batch_concurrency: int = 4  # batch-mix requests in flight (served configurations)
    groups: tuple[str, ...] = GROUPS
    quick: bool = False
    ladder_rounds: int = 2
    infinity_venv: Path | None = None  # default: benchmarks.peers.infinity.DEFAULT_VENV
    seq_len: int = 256  # the longest a sentence gets (for compare_report's plan fields)
    max_window_s: float = 24.0  # the longest a slow point's window is stretched to (benchmarks.windows)

    def windows(self) -> WindowPolicy:
        return WindowPolicy(self.duration_s, self.warmup_s, max_duration_s=self.max_window_s)


@dataclass
class Inputs:
    """The sentences and every form of them the configurations send, prepared once."""

    sentences: list[str]
    tokens: list[int]  # per sentence, after truncation
    files: dict[str, Path] = field(default_factory=dict)  # "text-1", "text-32", "tokens-1", "tokens-32"
    tokens_per_request: dict[str, float] = field(default_factory=dict)


def plan_from_args(args: argparse.Namespace) -> MinilmPlan:
    groups = GROUPS
    if getattr(args, "configs", None):
        groups = tuple(g.strip() for g in args.configs.split(",") if g.strip())
        unknown = [g for g in groups if g not in GROUPS]
        if unknown or not groups:
            raise UserError(f"--configs {args.configs!r}: unknown group {', '.join(unknown) or '(none)'}; expected a "
                            f"comma-separated subset of {', '.join(GROUPS)}")
    skipped = {g for s in args.skip for g in (("sentence-transformers", "onnxruntime") if s == "inprocess" else (s,))}
    groups = tuple(g for g in groups if g not in skipped)
    if not groups:
        raise UserError("--configs/--skip leave no configuration to measure")
    if args.quick:
        concurrency = [1, 4] if args.concurrency == "1,4,16,64" else parse_concurrency(args.concurrency)
        return MinilmPlan(concurrency, min(args.duration, 2.0), min(args.warmup, 0.5), sentences=64, batch=8,
                          batch_concurrency=2, groups=groups, quick=True, ladder_rounds=1,
                          infinity_venv=getattr(args, "infinity_venv", None), max_window_s=min(args.duration, 2.0))
    return MinilmPlan(parse_concurrency(args.concurrency), args.duration, args.warmup, groups=groups,
                      infinity_venv=getattr(args, "infinity_venv", None), ladder_rounds=getattr(args, "ladder_rounds", 2),
                      max_window_s=max(args.duration, getattr(args, "max_window", 24.0)))


def parse_concurrency(text: str) -> list[int]:
    try:
        levels = sorted({int(c) for c in text.split(",") if c.strip()})
    except ValueError:
        levels = []
    if not levels or levels[0] < 1:
        raise UserError(f"--concurrency {text!r}: expected comma-separated positive integers, e.g. 1,4,16,64")
    return levels


# -- inputs ------------------------------------------------------------------------------------------------------------
def prepare_inputs(plan: MinilmPlan, work: Path, encoder) -> Inputs:
    from benchmarks.payloads import save_payloads
    from benchmarks.sentences import benchmark_sentences

    sentences = benchmark_sentences(plan.sentences)
    tokens = encoder.token_counts(sentences)
    inputs = Inputs(sentences, tokens)
    for batch in (1, plan.batch):
        groups = [sentences[i:i + batch] for i in range(0, len(sentences) - batch + 1, batch)]
        counts = [sum(tokens[i:i + batch]) for i in range(0, len(sentences) - batch + 1, batch)]
        text = [{"text": np.array([[s.encode("utf-8")] for s in g], dtype=np.object_)} for g in groups]
        tok = [encoder.encode(g) for g in groups]
        for kind, payloads in (("text", text), ("tokens", tok)):
            key = f"{kind}-{batch}"
            inputs.files[key] = save_payloads(work / f"{key}.npz", payloads)
            inputs.tokens_per_request[key] = float(np.mean(counts))
    return inputs


def agreement(peer: str, vectors: np.ndarray, reference: np.ndarray, sentences: list[str], threshold: float) -> dict:
    """Cosine of each of ``peer``'s vectors to sentence-transformers'; :class:`PeerUnavailable` below ``threshold``."""
    vectors = np.asarray(vectors, dtype=np.float64)
    if vectors.shape != reference.shape:
        raise PeerUnavailable(f"{peer}: returned embeddings of shape {list(vectors.shape)}, sentence-transformers "
                              f"{list(reference.shape)}")
    cosine = (vectors * reference).sum(axis=1) / (np.linalg.norm(vectors, axis=1) * np.linalg.norm(reference, axis=1))
    worst = int(np.argmin(cosine))
    if not np.isfinite(cosine).all() or cosine[worst] < threshold:
        raise PeerUnavailable(f"{peer}: embeddings disagree with sentence-transformers (cosine {cosine[worst]:.5f} < "
                              f"{threshold} on {sentences[worst][:60]!r})")
    return {"min_cosine": round(float(cosine.min()), 6), "mean_cosine": round(float(cosine.mean()), 6),
            "threshold": threshold, "sentences": len(sentences)}


def post_json(url: str, body: dict, timeout_s: float = 60.0) -> dict:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout_s) as response:
        return json.loads(response.read())


# -- rows ----------------------------------------------------------------------------------------------------------------
class Recorder:
    """Collects rows, latencies (for the CDF), and configurations that were stopped, printing progress."""

    def __init__(self):
        self.rows: list[dict] = []
        self.latencies: dict[tuple[str, int, int], list[float]] = {}
        self.problems: list[dict] = []
        self.rates = RateBook()  # sizes each configuration's next window
        self.t0 = time.monotonic()

    def add(self, row: dict, latencies: list[float]) -> None:
        self.rows.append(row)
        self.rates.note(row["config"], row["sentences_per_s"])
        self.latencies[(row["config"], row["concurrency"], row["batch"])] = latencies
        elapsed = time.monotonic() - self.t0
        print(f"[compare] {row['config']} c={row['concurrency']} batch={row['batch']}: "
              f"{row['sentences_per_s']:.0f} sentences/s, p50 {row['p50_ms']} ms, p99 {row['p99_ms']} ms"
              + (f", {row['errors']} errors" if row["errors"] else "") + f" (elapsed {elapsed:.0f} s)", flush=True)

    def stopped(self, config: str, reason: str) -> None:
        self.problems.append({"config": config, "reason": reason})
        print(f"[compare] {config}: not measured: {reason}", flush=True)


def make_row(config: str, family: str, protocol: str, concurrency: int, batch: int, latencies: list[float],
             throughput_rps: float, errors: dict, tokens_per_request: float, description: str, **extra) -> dict:
    row = {"config": config, "family": family, "protocol": protocol, "concurrency": concurrency, "batch": batch,
           **summarize(latencies, throughput_rps, errors)}
    row["sentences_per_s"] = round(row["throughput_rps"] * batch, 1)
    row["tokens_per_s"] = round(row["throughput_rps"] * tokens_per_request, 1)
    row["description"] = description
    row.update({"cpu_server_cores": None, "cpu_loadgen_cores": None, "server_side": None, "check": None})
    row.update(extra)
    return row


def served_rows(recorder: Recorder, config: str, family: str, protocol: str, target: str, url: str, model: str,
                server_pid: int, stats_url: str | None, inputs: Inputs, kind: str, plan: MinilmPlan, work: Path,
                description: str, check: dict | None, precision: str = "fp32", single_only: bool = False) -> None:
    points = [(c, 1) for c in plan.concurrency] + ([] if single_only else [(plan.batch_concurrency, plan.batch)])
    for concurrency, batch in points:
        key = f"{kind}-{batch}"
        rate = recorder.rates.last(config)
        for attempt in (1, 2):  # a second, longer window when the first completed too few requests per caller
            warmup, window = plan.windows().fit(concurrency, batch, rate)
            meter = CpuMeter({"server": server_pid}).start()
            stats = StatsWindow(stats_url, model).start() if stats_url else None
            result = run_loadgen(target, url, model, inputs.files[key], concurrency,
                                 replace(plan, duration_s=window, warmup_s=warmup), work)
            cores = meter.stop()
            row = make_row(config, family, protocol, concurrency, batch, result["latencies_ms"],
                           result["throughput_rps"], result["errors"], inputs.tokens_per_request[key], description,
                           cpu_server_cores=cores.get("server"), cpu_loadgen_cores=round(result["cpu_cores"], 3),
                           server_side=stats.stop() if stats else None, check=check, precision=precision,
                           model_variant=model, warmup_s=warmup, window_s=window)
            if not _measure_again(row, attempt, window, plan):
                break
            rate = refit_rate(row["sentences_per_s"])
        recorder.add(row, result["latencies_ms"])


def _measure_again(row: dict, attempt: int, window: float, plan: MinilmPlan) -> bool:
    """Whether a point's first window was too thin (and shorter than the cap), saying so."""
    from benchmarks.compare_minilm_report import enough_requests

    if attempt > 1 or enough_requests(row) or window >= plan.max_window_s:
        return False
    print(f"[compare] {row['config']} c={row['concurrency']} batch={row['batch']}: only {row['requests']} requests "
          f"completed in {window:g} s; measuring again with a window sized from that rate", flush=True)
    return True


# -- in-process ------------------------------------------------------------------------------------------------------------
def inprocess_rows(recorder: Recorder, st_model, onnx: dict[str, Path | None], encoder, inputs: Inputs,
                   reference: np.ndarray, check_sentences: list[str], plan: MinilmPlan) -> None:
    from benchmarks import inprocess

    # (concurrency, sentences per call, sentences per request): concurrency c of single-sentence requests is one call
    # of c sentences; the batch mix is one caller making calls of 32
    points = [(c, c, 1) for c in plan.concurrency] + [(1, plan.batch, plan.batch)]
    mean_tokens = float(np.mean(inputs.tokens))

    def measured(config: str, point: tuple[int, int, int], run):
        """``run(duration, warmup)`` in a window fitted to one caller making calls of ``point[1]`` sentences; again,
        longer, when the first window completed too few calls. Returns the measurement and its (warm-up, window)."""
        rate = recorder.rates.last(config)
        for attempt in (1, 2):
            fitted = plan.windows().fit(1, point[1], rate)
            m = run(fitted[1], fitted[0])
            thin = {"config": config, "family": "in-process", "concurrency": point[0], "batch": point[2],
                    "requests": len(m.latencies_ms)}
            if not _measure_again(thin, attempt, fitted[1], plan):
                break
            rate = refit_rate(m.throughput_rps)
        return m, fitted

    def add(config: str, point: tuple[int, int, int], m, description: str, check: dict | None,
            fitted: tuple[float, float]) -> None:
        concurrency, per_call, batch = point
        rps = m.throughput_rps / batch  # m counts sentences; a batch-mix request is 32 of them
        recorder.add(make_row(config, "in-process", "in-process", concurrency, batch, m.latencies_ms, rps, m.errors,
                              mean_tokens * batch, description, cpu_server_cores=m.cpu_cores, check=check,
                              sentences_per_call=per_call, warmup_s=fitted[0], window_s=fitted[1],
                              precision="int8" if config.endswith("int8") else "fp32"), m.latencies_ms)

    if "sentence-transformers" in plan.groups:
        for point in points:
            m, fitted = measured("sentence-transformers", point, lambda duration, warmup, point=point:
                                 inprocess.run_sentence_transformers(st_model, inputs.sentences, point[1], duration,
                                                                     warmup))
            add("sentence-transformers", point, m,
                "SentenceTransformer.encode (PyTorch), one call of `concurrency` sentences (ideal batching); batch mix: "
                "calls of 32", None, fitted)
    if "onnxruntime" not in plan.groups:
        return
    for precision in ("fp32", "int8"):
        config = f"onnxruntime-{precision}"
        path = onnx.get(precision)
        if path is None:
            recorder.stopped(config, onnx.get(f"{precision}_why") or "no ONNX file")
            continue
        try:
            session = inprocess.onnxruntime_session(str(path))
            names = [i.name for i in session.get_inputs()]
            arrays = encoder.encode(check_sentences)
            vectors = session.run(None, {n: arrays[n] for n in names})[0]
            check = agreement(config, vectors, reference, check_sentences,
                              INT8_AGREEMENT if precision == "int8" else FP32_AGREEMENT)
        except PeerUnavailable as exc:
            recorder.stopped(config, str(exc) + (f" (INT8 graph: {onnx['int8_source']})" if precision == "int8" else ""))
            continue
        except Exception as exc:  # a graph ONNX Runtime cannot run: this row stops, the others run
            recorder.stopped(config, f"ONNX Runtime could not run {path.name}: {type(exc).__name__}: {exc}")
            continue
        for point in points:
            m, fitted = measured(config, point, lambda duration, warmup, point=point, session=session:
                                 inprocess.run_onnxruntime_text(session, encoder, inputs.sentences, point[1],
                                                                duration, warmup))
            add(config, point, m, f"ONNX Runtime {precision.upper()} ({path.name}"
                + (f"; {onnx['int8_source']}" if precision == "int8" else "") + ") with tokenization, "
                "one call of `concurrency` sentences (ideal batching); batch mix: calls of 32", check, fitted)


# -- our Triton ------------------------------------------------------------------------------------------------------------
def serving_repository(repository: Path, model_dir: Path, work: Path) -> Path:
    """A repository holding only minilm, its tokenizer and the ensemble: copied (latest version) from ``repository``
    when it serves all three, else built now by the builders from the MiniLM folder (as a user would)."""
    target = work / "repo"
    if all((repository / name / "config.pbtxt").is_file() for name in MODEL_NAMES):
        for name in MODEL_NAMES:
            source = repository / name
            versions = [p.name for p in source.iterdir() if p.is_dir() and p.name.isdigit()]
            latest = max(versions, key=int) if versions else None

            def older_versions(folder, names, source=source, latest=latest):
                return [n for n in names if Path(folder) == source and n.isdigit() and n != latest]

            shutil.copytree(source, target / name, ignore=older_versions)
        for record in repository.glob("minilm.*.json"):  # the builders' publication record of the family
            shutil.copy2(record, target / record.name)
        print(f"[compare] serving minilm as built in {repository}", flush=True)
        return target
    print(f"[compare] {repository} does not serve {', '.join(MODEL_NAMES)}: building them from {model_dir} "
          "(python -m builders build --hf-dir ... --task embedding --name minilm)", flush=True)
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "builders", "build", "--hf-dir", str(model_dir), "--task", "embedding",
                           "--name", "minilm", "--repository", str(target), "--work-dir", str(work / "builds"),
                           "--quiet"], cwd=ROOT, capture_output=True, text=True)
    if done.returncode != 0:
        lines = [line for line in (done.stderr or done.stdout).strip().splitlines() if line.strip()]
        raise PeerUnavailable(f"building minilm with the builders failed (exit status {done.returncode}): "
                              f"{lines[-1] if lines else 'no output'}")
    print(f"[compare] built minilm in {time.monotonic() - started:.0f} s", flush=True)
    return target


def onnx_files(repo: Path, work: Path) -> dict:
    """The encoder's FP32 and INT8 ONNX graphs. INT8 is the builders' when they published one; when they refused it
    (it missed their agreement bound), ONNX Runtime's per-channel dynamic quantization of the FP32 graph, made here, so
    the INT8 row still exists and faces the same agreement check as every peer."""
    folder = repo / "minilm"
    versions = [p for p in folder.iterdir() if p.is_dir() and p.name.isdigit()]
    version = max(versions, key=lambda p: int(p.name))
    found: dict = {"fp32": version / "model.onnx", "int8": version / "model.int8.onnx", "int8_source": "builders"}
    if not found["fp32"].is_file():
        return {"fp32": None, "fp32_why": f"no model.onnx in {version}", "int8": None,
                "int8_why": f"no model.onnx in {version} to quantize"}
    if not found["int8"].is_file():
        from onnxruntime.quantization import QuantType, quantize_dynamic

        print("[compare] the builders published no INT8 encoder (refused: see their build report); quantizing "
              "model.onnx per channel with ONNX Runtime for the in-process INT8 row", flush=True)
        found["int8"] = work / "model.int8.per-channel.onnx"
        found["int8_source"] = "onnxruntime quantize_dynamic(per_channel=True), made by the benchmark"
        quantize_dynamic(str(found["fp32"]), str(found["int8"]), weight_type=QuantType.QInt8, per_channel=True)
    return found


def served_precision(repo: Path) -> str:
    return "int8" if "model.int8.onnx" in (repo / "minilm" / "config.pbtxt").read_text() else "fp32"


def triton_rows(recorder: Recorder, repo: Path, inputs: Inputs, reference: np.ndarray, check_sentences: list[str],
                plan: MinilmPlan, work: Path, tokenizer_file: Path) -> None:
    from clients.client import TritonClient
    from clients.serve import ServerConfig, TritonServer

    variants = [("", served_precision(repo))]
    if (repo / "minilm" / "configs" / "cpu_int8.pbtxt").is_file() and variants[0][1] != "int8":
        variants.append(("cpu_int8", "int8"))
    for config_name, precision in variants:
        suffix = "-int8" if config_name else ""
        extra = [f"--model-config-name={config_name}"] if config_name else []
        config = ServerConfig(repository=repo, http_port=free_port(), grpc_port=free_port(), metrics_port=free_port(),
                              log_file=work / f"triton{suffix}.log", ready_timeout_s=600, extra_args=extra)
        print(f"[compare] starting Triton with minilm ({precision.upper()}; log: {config.log_file})", flush=True)
        try:
            server_cm = TritonServer(config)
            server = server_cm.__enter__()
        except Exception as exc:  # the rows of this variant stop; the rest of the comparison runs
            recorder.stopped(f"triton{suffix}", f"Triton did not start: {exc}")
            continue
        try:
            threshold = INT8_AGREEMENT if precision == "int8" else FP32_AGREEMENT
            pid = server.process.pid
            configs = [(f"triton-grpc-text{suffix}", "grpc", "triton-grpc", server.grpc_url, "minilm_text", "text"),
                       (f"triton-http-text{suffix}", "http-binary", "triton-http", server.http_url, "minilm_text", "text")]
            if not config_name:
                configs.append(("triton-grpc-tokens", "grpc", "triton-grpc", server.grpc_url, "minilm", "tokens"))
            for name, protocol, target, url, model, kind in configs:
                try:
                    with TritonClient(url, protocol.split("-")[0],
                                      tokenizer=tokenizer_file if kind == "tokens" else None) as client:
                        vectors = client.embed(model, check_sentences).embeddings
                    check = agreement(name, vectors, reference, check_sentences, threshold)
                except Exception as exc:  # disagreement or a failed call: this configuration stops
                    recorder.stopped(name, str(exc) if isinstance(exc, PeerUnavailable) else
                                     f"{type(exc).__name__}: {exc}")
                    continue
                where = "raw text through the minilm_text ensemble (tokenizer -> encoder)" if kind == "text" else \
                    "pre-tokenized input straight to the minilm encoder"
                served_rows(recorder, name, "triton", protocol, target, url, model, pid, server.http_url, inputs, kind,
                            plan, work, f"Triton, {protocol}, {where}, {precision.upper()}", check, precision)
        finally:
            server_cm.__exit__(None, None, None)


def ladder_rows(recorder: Recorder, repo: Path, inputs: Inputs, plan: MinilmPlan, work: Path) -> None:
    """Every variant of benchmarks/compare_minilm_variants.py at concurrency 1 and the highest, raw text over gRPC;
    ``plan.ladder_rounds`` interleaved rounds, each step reporting its median (the machine drifts over minutes).

    One Triton in explicit model control loads one variant at a time: every encoder instance keeps ONNX Runtime's
    arena at its peak (about 1.7 GB after batches of 64 long messages), so eight variants loaded together took more
    than the machine's memory and thrashed."""
    from benchmarks.compare_minilm_variants import available, write_repository
    from clients.serve import ServerConfig, TritonServer

    VARIANTS, missing = available(repo)
    for why in missing:
        recorder.stopped("tuning", why)
    try:
        ladder_repo = write_repository(repo, work, VARIANTS)
        config = ServerConfig(repository=ladder_repo, http_port=free_port(), grpc_port=free_port(),
                              metrics_port=free_port(), log_file=work / "triton-ladder.log", ready_timeout_s=900,
                              model_control="explicit", load_models=["minilm_tokenizer"])
        print(f"[compare] starting Triton for the tuning ladder, {len(VARIANTS)} configurations of minilm loaded one "
              f"at a time (log: {config.log_file})", flush=True)
        server_cm = TritonServer(config)
        server = server_cm.__enter__()
    except Exception as exc:  # the ladder stops; the measured rows stand
        recorder.stopped("tuning", f"the ladder's Triton did not start: {exc}")
        return
    top = max(plan.concurrency)
    rounds: dict[tuple[str, int], list[dict]] = {}
    try:
        scratch = Recorder()
        for _ in range(plan.ladder_rounds):
            for variant in VARIANTS:
                model = f"minilm_text_{variant.name}"
                _load_alone(server, model)
                for concurrency in sorted({1, top}):
                    one = MinilmPlan(**{**plan.__dict__, "concurrency": [concurrency]})
                    before = len(scratch.rows)
                    served_rows(scratch, f"tuning:{variant.name}", "tuning", "grpc", "triton-grpc", server.grpc_url,
                                model, server.process.pid, server.http_url, inputs, "text", one, work, variant.label,
                                None, precision=variant.precision or served_precision(repo), single_only=True)
                    rounds.setdefault((variant.name, concurrency), []).extend(scratch.rows[before:])
    finally:
        server_cm.__exit__(None, None, None)
    for runs in rounds.values():
        runs.sort(key=lambda r: r["throughput_rps"])
        median = dict(runs[len(runs) // 2])
        median["rounds"] = [{"throughput_rps": r["throughput_rps"], "p50_ms": r["p50_ms"], "p99_ms": r["p99_ms"]}
                            for r in runs]
        recorder.rows.append(median)


def _load_alone(server, model: str) -> None:
    """Load ``model`` (an ensemble: with its steps) and unload every other ladder model first."""
    import tritonclient.http as httpclient

    from clients.admin_token import ADMIN_HEADER

    client = httpclient.InferenceServerClient(server.http_url, network_timeout=900.0)
    headers = {ADMIN_HEADER: server.admin_token}
    try:
        for entry in client.get_model_repository_index(headers=headers):
            if entry.get("state") == "READY" and entry["name"].startswith("minilm_text_") and entry["name"] != model:
                client.unload_model(entry["name"], headers=headers, unload_dependents=True)
        deadline = time.monotonic() + 120
        while any(e.get("state") == "READY" and e["name"].startswith("minilm_") and e["name"] != "minilm_tokenizer"
                  and not e["name"].endswith(model.removeprefix("minilm_text"))
                  for e in client.get_model_repository_index(headers=headers)) and time.monotonic() < deadline:
            time.sleep(0.5)  # unloading finishes in the background
        client.load_model(model, headers=headers)
    finally:
        client.close()


# -- peers -----------------------------------------------------------------------------------------------------------------
def _peer_process(command: list[str], log_path: Path, env: dict | None = None) -> tuple[subprocess.Popen, object]:
    log = open(log_path, "w")
    return subprocess.Popen(command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env=env,
                            stdin=subprocess.DEVNULL), log


def _log_tail(path: Path) -> str:
    lines = [line.strip() for line in path.read_text(errors="replace").splitlines() if line.strip()]
    return lines[-1][:300] if lines else "no output"


def fastapi_rows(recorder: Recorder, model_dir: Path, inputs: Inputs, reference: np.ndarray,
                 check_sentences: list[str], plan: MinilmPlan, work: Path) -> None:
    name = "fastapi-sentence-transformers"
    port = free_port()
    log_path = work / "fastapi.log"
    proc, log = _peer_process([sys.executable, "-m", "benchmarks.peers.fastapi_embed", "--model-dir", str(model_dir),
                               "--port", str(port)], log_path)
    try:
        if not wait_http_ok(f"http://127.0.0.1:{port}/health", timeout=180):
            raise PeerUnavailable(f"{name}: the service did not start within 180 s ({_log_tail(log_path)})")
        vectors = np.asarray(post_json(f"http://127.0.0.1:{port}/embed", {"sentences": check_sentences})["embeddings"])
        check = agreement(name, vectors, reference, check_sentences, FP32_AGREEMENT)
        served_rows(recorder, name, "baseline", "http-json", "fastapi-embed", f"127.0.0.1:{port}", "minilm", proc.pid,
                    None, inputs, "text", plan, work,
                    "FastAPI + uvicorn, SentenceTransformer.encode per request, JSON (the baseline)", check)
    except PeerUnavailable as exc:
        recorder.stopped(name, str(exc))
    finally:
        stop_process(proc, grace_s=15)
        log.close()


def infinity_rows(recorder: Recorder, model_dir: Path, inputs: Inputs, reference: np.ndarray,
                  check_sentences: list[str], plan: MinilmPlan, work: Path, facts: dict) -> None:
    from benchmarks.peers import infinity

    name = "infinity"
    venv = Path(plan.infinity_venv or infinity.DEFAULT_VENV)
    try:
        env = infinity.installed(venv)
        if env is None and plan.quick:
            raise PeerUnavailable(f"infinity: its environment ({venv}) is not installed, and --quick does not install "
                                  "it (`python -m benchmarks.peers.infinity` does)")
        if env is None:
            print(f"[compare] installing {infinity.REQUIREMENT} into {venv} (once, about a minute here)", flush=True)
            env = infinity.ensure_installed(venv)
        facts["infinity"] = {"requirement": infinity.REQUIREMENT, "venv": str(env.venv), "install_s": env.install_s,
                             "packages": infinity.package_versions(env), "settings": infinity.TUNED_SETTINGS}
    except PeerUnavailable as exc:
        recorder.stopped(name, str(exc))
        return
    port = free_port()
    log_path = work / "infinity.log"
    proc, log = _peer_process(infinity.server_command(env, model_dir, port), log_path, infinity.server_environment())
    try:
        if not wait_http_ok(f"http://127.0.0.1:{port}/health", timeout=300):
            raise PeerUnavailable(f"infinity: the server did not start within 300 s ({_log_tail(log_path)})")
        answer = post_json(f"http://127.0.0.1:{port}/embeddings", {"input": check_sentences, "model": "minilm"})
        data = sorted(answer["data"], key=lambda d: d["index"])
        check = agreement(name, np.asarray([d["embedding"] for d in data]), reference, check_sentences, FP32_AGREEMENT)
        served_rows(recorder, name, "peer", "http-json", "infinity", f"127.0.0.1:{port}", "minilm", proc.pid, None,
                    inputs, "text", plan, work,
                    f"Infinity {infinity.VERSION} ({infinity.TUNED_SETTINGS['engine']} engine, batch size "
                    f"{infinity.TUNED_SETTINGS['batch_size']}), OpenAI-style JSON", check)
    except PeerUnavailable as exc:
        recorder.stopped(name, str(exc))
    except (OSError, ValueError, KeyError) as exc:
        recorder.stopped(name, f"infinity: unexpected answer to /embeddings: {type(exc).__name__}: {exc}")
    finally:
        stop_process(proc, grace_s=15)
        log.close()


# -- the command -----------------------------------------------------------------------------------------------------------
def run(args: argparse.Namespace) -> int:
    import os

    from benchmarks.compare_minilm_report import write_outputs
    from benchmarks.machine import machine_facts
    from benchmarks.sentences import MAX_TOKENS, minilm_dir
    from clients.embeddings import TokenEncoder

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    plan = plan_from_args(args)
    if plan.duration_s <= 0 or plan.warmup_s < 0:
        raise UserError("expected --duration > 0 and --warmup >= 0")
    results_dir = Path(args.results_dir)
    model_dir = minilm_dir()
    tokenizer_file = model_dir / "tokenizer.json"
    encoder = TokenEncoder(tokenizer_file, MAX_TOKENS)
    recorder = Recorder()
    facts: dict = {}
    started = time.monotonic()
    from sentence_transformers import SentenceTransformer

    st_model = SentenceTransformer(str(model_dir), device="cpu", local_files_only=True)
    with tempfile.TemporaryDirectory(prefix="compare-minilm-") as tmp:
        work = Path(tmp)
        inputs = prepare_inputs(plan, work, encoder)
        check_sentences = inputs.sentences[:CHECK_SENTENCES]
        reference = st_model.encode(check_sentences, normalize_embeddings=True, convert_to_numpy=True).astype(np.float64)
        print(f"[compare] {len(inputs.sentences)} sentences, {min(inputs.tokens)}-{max(inputs.tokens)} tokens "
              f"(mean {np.mean(inputs.tokens):.0f}); configurations: {', '.join(plan.groups)}", flush=True)
        repo, onnx = None, {}
        if {"triton", "onnxruntime", "ladder"} & set(plan.groups):
            try:
                repo = serving_repository(Path(args.repository), model_dir, work)
                onnx = onnx_files(repo, work) if "onnxruntime" in plan.groups else {}
                facts["served_precision"] = served_precision(repo)
                facts["int8_source"] = onnx.get("int8_source")
            except PeerUnavailable as exc:
                for group in ("triton", "onnxruntime", "ladder"):
                    if group in plan.groups:
                        recorder.stopped(group, str(exc))
        if "onnxruntime" in plan.groups and repo is None:
            plan_groups = tuple(g for g in plan.groups if g != "onnxruntime")
            plan = MinilmPlan(**{**plan.__dict__, "groups": plan_groups})
        inprocess_rows(recorder, st_model, onnx, encoder, inputs, reference, check_sentences, plan)
        del st_model  # the servers get the machine to themselves
        if "triton" in plan.groups and repo is not None:
            triton_rows(recorder, repo, inputs, reference, check_sentences, plan, work, tokenizer_file)
        if "ladder" in plan.groups and repo is not None:
            ladder_rows(recorder, repo, inputs, plan, work)
        if "fastapi" in plan.groups:
            fastapi_rows(recorder, model_dir, inputs, reference, check_sentences, plan, work)
        if "infinity" in plan.groups:
            infinity_rows(recorder, model_dir, inputs, reference, check_sentences, plan, work, facts)
    facts["sentences"] = {"count": len(inputs.sentences), "min_tokens": int(min(inputs.tokens)),
                          "mean_tokens": round(float(np.mean(inputs.tokens)), 1), "max_tokens": int(max(inputs.tokens)),
                          "check_sentences": CHECK_SENTENCES}
    machine = machine_facts()
    machine["packages"].update(_versions(("sentence-transformers", "transformers", "tokenizers", "fastapi", "uvicorn")))
    summary = write_outputs(recorder.rows, recorder.latencies, plan, machine, recorder.problems, facts, results_dir,
                            time.monotonic() - started)
    print(f"[compare] wrote {results_dir / 'compare-minilm.json'}, {results_dir / 'compare-minilm-report.md'} and plots "
          f"in {time.monotonic() - started:.0f} s", flush=True)
    for line in summary["target_lines"]:
        print(f"[compare] {line}", flush=True)
    return 0


def _versions(names: tuple[str, ...]) -> dict[str, str]:
    from common.environment import package_versions

    return package_versions(names)
