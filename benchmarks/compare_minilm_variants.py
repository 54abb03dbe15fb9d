"""The tuning ladder of ``compare --model minilm``: the builders' MiniLM configuration changed one knob at a time.

Each variant is a copy of the published family in a scratch repository: ``minilm_<v>`` (the encoder, its version
folder linking the published files) and ``minilm_text_<v>`` (the ensemble, pointing at that encoder and at
``minilm_tokenizer`` or a ``minilm_tokenizer_<v>`` copy), with the published ``config.pbtxt`` edited as Triton's
``ModelConfig`` message, so what is measured is exactly the published configuration with one change. One Triton
serves them all; every step is measured as users send: raw text over gRPC.

The ladder walks from the simplest configuration (one encoder instance, no merging of different lengths) to the
builders' defaults and beyond (the INT8 encoder the builders publish beside FP32, when they accepted it); branches are
alternatives measured beside it. A step that needs a file the published version lacks (``model.int8.onnx`` when the
builders refused INT8) is left out, and the report says why.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from common.files import atomic_write_text

Edit = Callable[[object], None]


def instances(count: int, threads: int) -> Edit:
    def edit(config) -> None:
        config.instance_group[0].count = count
        config.parameters["intra_op_num_threads"].string_value = str(threads)
    return edit


def batching_delay(microseconds: int) -> Edit:
    def edit(config) -> None:
        config.dynamic_batching.max_queue_delay_microseconds = microseconds
    return edit


def no_ragged(config) -> None:
    for tensor in config.input:
        tensor.allow_ragged_batch = False


def no_batching(config) -> None:
    config.ClearField("dynamic_batching")


def padding_ratio(ratio: float) -> Edit:
    """``max_padding_ratio`` of the runtime: 0 pads a whole batch to its longest message in one run."""
    def edit(config) -> None:
        config.parameters["max_padding_ratio"].string_value = str(ratio)
    return edit


def int8_encoder(config) -> None:
    config.parameters["onnx_file"].string_value = "model.int8.onnx"


def tokenizer_instances(count: int) -> Edit:
    def edit(config) -> None:
        config.instance_group[0].count = count
    return edit


@dataclass(frozen=True)
class Variant:
    name: str
    label: str
    encoder: tuple[Edit, ...] = ()
    tokenizer: tuple[Edit, ...] = ()
    ladder: bool = True
    needs: str | None = None  # a file the published encoder version must hold
    precision: str | None = None  # the encoder's, when the step changes it (default: the published configuration's)


VARIANTS: tuple[Variant, ...] = (
    Variant("l0", "1 encoder instance × 2 ORT threads, only equal-length messages merge (no ragged batching)",
            (instances(1, 2), no_ragged, padding_ratio(0))),
    Variant("l1", "+ ragged batching (messages of any length merge, padded to the longest)",
            (instances(1, 2), padding_ratio(0))),
    Variant("l2", "+ 2 encoder instances × 1 ORT thread", (padding_ratio(0),)),
    Variant("l3", "+ merged runs cut by length, padding <= 1.25x (the builders' defaults)"),
    Variant("l4", "+ 2 tokenizer instances", tokenizer=(tokenizer_instances(2),)),
    Variant("l5", "+ the INT8 encoder (per-channel, published beside FP32)", (int8_encoder,),
            tokenizer=(tokenizer_instances(2),), needs="model.int8.onnx", precision="int8"),
    Variant("b_delay", "branch: the defaults with a 2 ms batching delay", (batching_delay(2000),), ladder=False),
    Variant("b_no_batching", "branch: the defaults with dynamic batching off", (no_batching,), ladder=False),
)
DEFAULTS = "l3"


def _latest(model_dir: Path) -> Path:
    return max((p for p in model_dir.iterdir() if p.is_dir() and p.name.isdigit()), key=lambda p: int(p.name))


def _copy_model(source: Path, target_name: str, root: Path, edits: tuple[Edit, ...], rename: dict[str, str]) -> None:
    """``source`` model as ``root/target_name``: version 1 links the latest version's files; config edited."""
    from common.triton_config import config_to_text, load_config_file

    config = load_config_file(source / "config.pbtxt")
    config.name = target_name
    config.ClearField("version_policy")
    for step in getattr(config, "ensemble_scheduling").step if config.platform == "ensemble" else []:
        step.model_name = rename.get(step.model_name, step.model_name)
        step.model_version = -1
    for edit in edits:
        edit(config)
    version = root / target_name / "1"
    version.mkdir(parents=True, exist_ok=True)
    for item in _latest(source).iterdir():
        # lineage.json stays behind: its publication stamp would make the serving launcher treat the copy as an
        # interrupted publication of the minilm family and remove it; a copy without it is a hand-made model
        if item.name != "lineage.json" and not (version / item.name).exists():
            os.symlink(item.resolve(), version / item.name)
    atomic_write_text(root / target_name / "config.pbtxt", config_to_text(config))


def available(repo: Path, variants: tuple[Variant, ...] = VARIANTS) -> tuple[tuple[Variant, ...], list[str]]:
    """The variants the published encoder can serve, and why each other one cannot."""
    latest = _latest(repo / "minilm")
    kept = tuple(v for v in variants if v.needs is None or (latest / v.needs).is_file())
    why = [f"{v.label.lstrip('+ ')}: {latest} has no {v.needs} (the builders did not publish it)"
           for v in variants if v not in kept]
    return kept, why


def write_repository(repo: Path, root: Path, variants: tuple[Variant, ...] = VARIANTS) -> Path:
    """A repository with every variant's encoder, tokenizer (when changed) and ensemble; returns it."""
    out = root / "ladder_repository"
    _copy_model(repo / "minilm_tokenizer", "minilm_tokenizer", out, (), {})
    for v in variants:
        tokenizer = f"minilm_tokenizer_{v.name}" if v.tokenizer else "minilm_tokenizer"
        if v.tokenizer:
            _copy_model(repo / "minilm_tokenizer", tokenizer, out, v.tokenizer, {})
        _copy_model(repo / "minilm", f"minilm_{v.name}", out, v.encoder, {})
        _copy_model(repo / "minilm_text", f"minilm_text_{v.name}", out, (),
                    {"minilm": f"minilm_{v.name}", "minilm_tokenizer": tokenizer})
    return out


def ladder_table(rows: list[dict], top: int, variants: tuple[Variant, ...] = VARIANTS) -> list[str]:
    """Each step at c=1 and c=top, with the change in sentences/s against the previous ladder step."""
    by = {(r["config"].removeprefix("tuning:"), r["concurrency"]): r for r in rows if r["family"] == "tuning"}
    lines = [f"| step | c=1 p50 ms | c=1 p99 ms | c={top} sentences/s | c={top} p99 ms | change at c={top} |",
             "|---|---|---|---|---|---|"]
    previous = None
    for v in variants:
        one, many = by.get((v.name, 1)), by.get((v.name, top))
        if not one or not many:
            continue
        change = ""
        if previous is not None and v.ladder:
            change = f"{(many['throughput_rps'] / max(previous['throughput_rps'], 1e-9) - 1) * 100:+.0f} % sentences/s"
        elif not v.ladder:
            base = by.get((DEFAULTS, top))
            if base:
                change = f"{(many['throughput_rps'] / max(base['throughput_rps'], 1e-9) - 1) * 100:+.0f} % vs defaults"
        lines.append(f"| {v.label} | {one['p50_ms']} | {one['p99_ms']} | {many['throughput_rps']:.0f} | "
                     f"{many['p99_ms']} | {change} |")
        if v.ladder:
            previous = many
    return lines if len(lines) > 2 else []
