"""ONNX → TensorRT plan with the TensorRT 10 Python API, verified against ONNX Runtime, with its metadata beside it.

Runs where TensorRT and a CUDA GPU exist (NGC TensorRT/Triton images; ``pip install .[gpu]``). On other machines
:func:`unavailable_reason` says why the step is skipped, and everything around the build (profiles, metadata, configs,
the compatibility check) is plain Python in :mod:`builders.shapes`, :mod:`builders.tensorrt_meta` and
:mod:`builders.triton_configs`.

What a build does:

* parses the ONNX file with ``trt.OnnxParser`` (parser errors are reported with the node that failed);
* one optimization profile per declared profile (min/opt/max of every input, :func:`builders.shapes.derive_profiles`);
* precision flags: FP16, or INT8 with an ``IInt8EntropyCalibrator2`` fed from the *validation* split at the
  calibration profile's opt shapes, its cache persisted (``tensorrt.calibration_cache``) under a name keyed by the
  ONNX file's SHA-256 and the calibration batches' SHA-256, so a retrained model is calibrated afresh and an
  unchanged one skips calibration;
* ``WORKSPACE`` memory-pool limit, ``builder_optimization_level``, optional hardware / version compatibility (a
  version-compatible plan carries TensorRT's lean runtime as host code: every ``trt.Runtime`` that deserializes it
  sets ``engine_host_code_allowed``, and Triton needs ``--backend-config=tensorrt,version-compatible=true``);
* a timing cache per TensorRT version and GPU (``tensorrt.timing_cache`` with both in its name), loaded and saved back;
  a cache TensorRT rejects (``set_timing_cache`` returns False) is replaced by a fresh one with a warning;
* parity of the engine against ONNX Runtime on held-out inputs with tolerances per precision (NaN/Inf fail it);
* ``model.plan.json`` with the TensorRT version, GPU name and compute capability, profiles, precision and hashes, and
  a compatibility check of that metadata against this host before the plan is handed on;
* with ``tensorrt.mode = "auto"`` the plan is an optional target: when it cannot be built or misses parity,
  :func:`build_optional` reports why and leaves it out, and the other targets publish.
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import importlib.util
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from common.errors import UserError
from common.files import atomic_write_bytes, atomic_write_text, sha256_file
from builders.parity import ParityReport, compare
from builders.runners import heldout_batches, ort_runner, ort_session
from builders.settings import BuildConfig, Tolerance
from builders.shapes import Profile
from builders.tensorrt_meta import PlanMetadata, PlanTensor, ensure_compatible, host_info, metadata_path, read_metadata

_DTYPES = {"FLOAT": "float32", "HALF": "float16", "INT64": "int64", "INT32": "int32", "BOOL": "bool", "INT8": "int8"}


def unavailable_reason() -> str | None:
    """Why no plan can be built here, or None when TensorRT and a CUDA GPU are present."""
    if importlib.util.find_spec("tensorrt") is None:
        return ("the TensorRT Python package is not installed (it exists only in the GPU images: NGC TensorRT/Triton "
                "containers, `pip install .[gpu]`)")
    try:
        import torch

        if not torch.cuda.is_available():
            return "no CUDA GPU is visible (torch.cuda.is_available() is False)"
    except ImportError:
        return "PyTorch is not installed"
    return None


@dataclass
class PlanResult:
    plan: Path
    metadata: PlanMetadata
    parity: ParityReport
    seconds: float

    def files(self) -> dict:
        return {"plan": str(self.plan), "metadata": str(metadata_path(self.plan))}

    def to_dict(self) -> dict:
        return {"plan": self.plan.name, "precision": self.metadata.precision, "gpu_name": self.metadata.gpu_name,
                "compute_capability": self.metadata.compute_capability,
                "tensorrt_version": self.metadata.tensorrt_version, "plan_sha256": self.metadata.plan_sha256,
                "onnx_sha256": self.metadata.onnx_sha256, "build_seconds": round(self.seconds, 1),
                "parity": self.parity.to_dict()}

    def summary(self) -> str:
        return f"{self.metadata.precision} plan for {self.metadata.gpu_name}: {self.parity.summary()}"


def _fit(array: np.ndarray, shape: Sequence[int], pad: float) -> np.ndarray:
    """Crop or right-pad ``array`` to ``shape`` (calibration runs at the profile's opt shape)."""
    out = np.full(tuple(shape), pad, dtype=array.dtype)
    region = tuple(slice(0, min(a, b)) for a, b in zip(array.shape, shape))
    out[region] = array[region]
    if array.shape[0] < shape[0]:  # repeat rows to fill the batch
        for row in range(array.shape[0], shape[0]):
            out[row] = out[row % max(array.shape[0], 1)]
    return out


def calibration_batches(exported, splits, profile: Profile, batches: int) -> list[dict[str, np.ndarray]]:
    """The INT8 calibration feeds: up to ``batches`` batches of the validation split at the profile's opt shapes."""
    input_names = [t.name for t in exported.manifest.inputs]
    pad = float(exported.manifest.preprocessing.get("pad_id", 0))
    opt = {name: r.opt for name, r in profile.inputs.items()}
    batch_size = next(iter(opt.values()))[0]
    feeds = []
    for batch in heldout_batches(exported.spec, splits.val, batch_size, limit=batches * batch_size):
        arrays = dict(zip(input_names, batch.inputs))
        feeds.append({name: _fit(arrays[name], opt[name], pad) for name in input_names})
    return feeds


def fingerprint_batches(feeds: Sequence[dict[str, np.ndarray]]) -> str:
    """SHA-256 over the names, dtypes, shapes and bytes of every calibration batch, in order."""
    digest = hashlib.sha256()
    for feed in feeds:
        for name in sorted(feed):
            array = np.ascontiguousarray(feed[name])
            digest.update(f"{name}|{array.dtype.str}|{array.shape}|".encode())
            digest.update(array.tobytes())
    return digest.hexdigest()


def calibration_cache_path(template: str | Path, model: str, onnx_sha256: str, data_sha256: str) -> Path:
    """Where the INT8 scales of *this* graph measured on *this* data live.

    Scales belong to the weights they were measured on: a cache keyed by model name alone would hand a retrained
    model (the training sidecar retrains continuously) the scales of its predecessor. The name therefore carries
    the ONNX file's and the calibration data's SHA-256 (16 hex digits each):
    ``.cache/tensorrt/textclf.calibration.cache`` -> ``textclf.calibration.onnx-<16>.data-<16>.cache``.
    """
    base = Path(str(template).format(model=model))
    return base.with_name(f"{base.stem}.onnx-{onnx_sha256[:16]}.data-{data_sha256[:16]}{base.suffix}")


def _calibrator(trt, feeds: Sequence[dict[str, np.ndarray]], cache_path: Path):
    import torch

    batch_size = int(next(iter(feeds[0].values())).shape[0]) if feeds else 1

    class EntropyCalibrator(trt.IInt8EntropyCalibrator2):
        def __init__(self):
            trt.IInt8EntropyCalibrator2.__init__(self)
            self._batches = iter(feeds)
            self._held: list = []

        def get_batch_size(self):
            return batch_size

        def get_batch(self, names):
            try:
                feed = next(self._batches)
            except StopIteration:
                return None
            self._held = [torch.from_numpy(feed[name]).cuda() for name in names]
            torch.cuda.synchronize()  # the copies must land before TensorRT reads the buffers on its own stream
            return [int(t.data_ptr()) for t in self._held]

        def read_calibration_cache(self):
            return cache_path.read_bytes() if cache_path.is_file() else None

        def write_calibration_cache(self, cache):
            atomic_write_bytes(cache_path, bytes(cache))

    return EntropyCalibrator()


def _warn(text: str) -> None:
    print(f"warning: {text}", file=sys.stderr, flush=True)


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9.]+", "-", text.lower()).strip("-") or "gpu"


def timing_cache_path(template: str | Path, tensorrt_version: str, gpu_name: str, compute_capability: str) -> Path:
    """One timing cache per TensorRT version and GPU model, because TensorRT rejects a cache made by another one.

    The cache lives in a persistent volume that outlives image upgrades and may be shared between hosts:
    ``.cache/tensorrt/timing.cache`` -> ``timing.trt10.7.0.nvidia-h100-80gb-hbm3.sm90.cache``.
    """
    base = Path(template)
    tag = f"trt{tensorrt_version}.{_slug(gpu_name)}.sm{compute_capability.replace('.', '')}"
    return base.with_name(f"{base.stem}.{tag}{base.suffix}")


def attach_timing_cache(config, path: Path, warn: Callable[[str], None] = _warn) -> bool:
    """Give the builder ``config`` the timing cache stored at ``path``, or a fresh one; True when the stored one is used.

    ``IBuilderConfig.set_timing_cache(cache, ignore_mismatch=False)`` returns False when the cache was made on
    another GPU or TensorRT version (and ``create_timing_cache`` may fail on a damaged file): then the build goes on
    with a fresh cache and a warning, instead of building without one and failing afterwards when the missing cache
    is serialized.
    """
    stored = path.read_bytes() if path.is_file() else b""
    if stored:
        try:
            cache = config.create_timing_cache(stored)
            reason = "TensorRT rejected it (made on another GPU or TensorRT version)"
            if cache is not None and config.set_timing_cache(cache, ignore_mismatch=False):
                return True
        except Exception as exc:  # TensorRT raises on a damaged or foreign file
            reason = f"it could not be read ({exc})"
        warn(f"timing cache {path}: {reason}; starting a fresh one (it replaces the stored one after the build)")
    fresh = config.create_timing_cache(b"")
    if fresh is None or not config.set_timing_cache(fresh, ignore_mismatch=False):
        warn(f"TensorRT did not accept a fresh timing cache; building without one ({path} is left as it is)")
    return False


def save_timing_cache(config, path: Path, warn: Callable[[str], None] = _warn) -> bool:
    """Write the builder's timing cache back to ``path``; False (with a warning) when the builder has none."""
    cache = config.get_timing_cache()
    if cache is None:
        warn(f"the builder has no timing cache to save; {path} is left as it is")
        return False
    atomic_write_bytes(path, bytes(cache.serialize()))
    return True


def deserialize_engine(trt, logger, data: bytes, version_compatible: bool, source: str):
    """``(runtime, engine)`` for a serialized plan; a :class:`UserError` instead of ``None``.

    A version-compatible plan embeds TensorRT's lean runtime, i.e. host code, which a ``trt.Runtime`` refuses
    (``deserialize_cuda_engine`` returns None) unless ``engine_host_code_allowed`` is set first. The runtime is
    returned with the engine so it lives as long as the engine does.
    """
    runtime = trt.Runtime(logger)
    if version_compatible:
        runtime.engine_host_code_allowed = True
    engine = runtime.deserialize_cuda_engine(data)
    if engine is None:
        hint = (" (a version-compatible plan needs TensorRT 10.x of at least the building version)" if version_compatible
                else " (it was built by another TensorRT version or for another GPU; rebuild it here)")
        raise UserError(f"TensorRT could not deserialize {source}{hint}")
    return runtime, engine


def build_plan(exported, splits, onnx_path: Path, profiles: Sequence[Profile], settings: BuildConfig, out_dir: Path) -> tuple[Path, PlanMetadata]:
    """Build ``out_dir/model.plan`` and ``model.plan.json``; a :class:`UserError` with the parser's reason otherwise."""
    import tensorrt as trt
    import torch

    cfg = settings.tensorrt
    out_dir.mkdir(parents=True, exist_ok=True)
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)  # explicit batch is the only mode in TensorRT 10
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
        raise UserError(f"TensorRT cannot parse {onnx_path}: {'; '.join(errors) or 'unknown parser error'}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, cfg.workspace_mib << 20)
    config.builder_optimization_level = cfg.optimization_level
    if cfg.precision in ("fp16", "int8"):
        config.set_flag(trt.BuilderFlag.FP16)
        from builders.tensorrt_precision import keep_sensitive_layers_fp32

        keep_sensitive_layers_fp32(trt, network, config)  # Softmax/LayerNorm in FP32 (BERT-family parity)
    trt_profiles = []
    for profile in profiles:
        opt_profile = builder.create_optimization_profile()
        for name, r in profile.inputs.items():
            opt_profile.set_shape(name, r.min, r.opt, r.max)
        config.add_optimization_profile(opt_profile)
        trt_profiles.append(opt_profile)
    onnx_sha256 = sha256_file(onnx_path)
    if cfg.precision == "int8":
        config.set_flag(trt.BuilderFlag.INT8)
        feeds = calibration_batches(exported, splits, profiles[0], cfg.calibration_batches)
        if not feeds:
            raise UserError(f"INT8 calibration of {exported.manifest.model!r} needs validation samples, but the "
                            "validation split is empty (use tensorrt.precision = \"fp16\")")
        cache = calibration_cache_path(cfg.calibration_cache, exported.manifest.model, onnx_sha256,
                                       fingerprint_batches(feeds))
        cache.parent.mkdir(parents=True, exist_ok=True)
        config.int8_calibrator = _calibrator(trt, feeds, cache)
        config.set_calibration_profile(trt_profiles[0])
    if cfg.hardware_compatibility == "ampere_plus":
        config.hardware_compatibility_level = trt.HardwareCompatibilityLevel.AMPERE_PLUS
    if cfg.version_compatible:
        config.set_flag(trt.BuilderFlag.VERSION_COMPATIBLE)
    major, minor = torch.cuda.get_device_capability(0)
    gpu_name = torch.cuda.get_device_name(0)
    timing_path = timing_cache_path(cfg.timing_cache, trt.__version__, gpu_name, f"{major}.{minor}")
    timing_path.parent.mkdir(parents=True, exist_ok=True)
    attach_timing_cache(config, timing_path)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise UserError(f"TensorRT failed to build an engine from {onnx_path} (see the TensorRT log above)")
    save_timing_cache(config, timing_path)
    plan = out_dir / "model.plan"
    atomic_write_bytes(plan, bytes(serialized))

    _runtime, engine = deserialize_engine(trt, logger, plan.read_bytes(), cfg.version_compatible, str(plan))
    inputs, outputs = [], []
    for index in range(engine.num_io_tensors):
        name = engine.get_tensor_name(index)
        tensor = PlanTensor(name=name, dtype=_DTYPES.get(engine.get_tensor_dtype(name).name, engine.get_tensor_dtype(name).name.lower()),
                            shape=[int(d) for d in engine.get_tensor_shape(name)])
        (inputs if engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT else outputs).append(tensor)
    meta = PlanMetadata(
        tensorrt_version=trt.__version__, gpu_name=gpu_name, compute_capability=f"{major}.{minor}",
        precision=cfg.precision, hardware_compatibility=cfg.hardware_compatibility,
        version_compatible=cfg.version_compatible, profiles=[p.to_dict() for p in profiles], inputs=inputs,
        outputs=outputs, onnx_sha256=onnx_sha256, plan_sha256=sha256_file(plan),
        workspace_mib=cfg.workspace_mib, optimization_level=cfg.optimization_level,
        built_at=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"))
    atomic_write_text(metadata_path(plan), meta.model_dump_json(indent=2) + "\n")
    return plan, meta


def engine_runner(plan: Path, profiles: Sequence[Profile], input_names: Sequence[str], output_names: Sequence[str],
                  version_compatible: bool | None = None):
    """Run a plan with the TensorRT runtime on torch CUDA buffers, choosing the profile that fits each batch.

    ``version_compatible`` defaults to what the plan's ``model.plan.json`` says (False without one).
    """
    import tensorrt as trt
    import torch

    if version_compatible is None:
        version_compatible = read_metadata(plan).version_compatible if metadata_path(plan).is_file() else False
    logger = trt.Logger(trt.Logger.WARNING)
    runtime, engine = deserialize_engine(trt, logger, plan.read_bytes(), version_compatible, str(plan))
    context = engine.create_execution_context()
    stream = torch.cuda.Stream()
    torch_dtypes = {"float32": torch.float32, "float16": torch.float16, "int64": torch.int64, "int32": torch.int32,
                    "bool": torch.bool}
    current = [0]

    def fits(profile: Profile, arrays) -> bool:
        return all(all(lo <= s <= hi for s, lo, hi in zip(a.shape, profile.inputs[n].min, profile.inputs[n].max))
                   for n, a in zip(input_names, arrays))

    def run(arrays):
        chosen = next((p for p in profiles if fits(p, arrays)), None)
        if chosen is None:
            raise UserError(f"input shapes {[list(a.shape) for a in arrays]} fit no optimization profile of {plan}")
        if chosen.index != current[0]:
            context.set_optimization_profile_async(chosen.index, stream.cuda_stream)
            current[0] = chosen.index
        held, outs = [], []
        with torch.cuda.stream(stream):  # copies, execution and read-back ordered on one stream
            for name, array in zip(input_names, arrays):
                tensor = torch.from_numpy(np.ascontiguousarray(array)).cuda(non_blocking=False)
                held.append(tensor)
                context.set_input_shape(name, tuple(array.shape))
                context.set_tensor_address(name, int(tensor.data_ptr()))
            for name in output_names:
                dtype = _DTYPES.get(engine.get_tensor_dtype(name).name, "float32")
                out = torch.empty(tuple(context.get_tensor_shape(name)), dtype=torch_dtypes[dtype], device="cuda")
                context.set_tensor_address(name, int(out.data_ptr()))
                outs.append(out)
            if not context.execute_async_v3(stream.cuda_stream):
                raise UserError(f"TensorRT execution of {plan} failed")
            results = [o.float().cpu().numpy() for o in outs]
        stream.synchronize()
        return results

    run.keep_alive = (runtime, engine, context)  # the runtime must outlive the engine and its context
    return run


def build_and_verify(exported, splits, onnx_path: Path, profiles: Sequence[Profile], settings: BuildConfig,
                     out_dir: Path) -> PlanResult:
    """Build, check the plan against this host, and compare the engine with ONNX Runtime on held-out inputs."""
    import time

    start = time.monotonic()
    plan, meta = build_plan(exported, splits, onnx_path, profiles, settings, out_dir)
    ensure_compatible(meta, host_info(), str(plan))
    names_in = [t.name for t in exported.manifest.inputs]
    names_out = [t.name for t in exported.manifest.outputs]
    reference = ort_runner(ort_session(onnx_path), names_in, names_out)
    candidate = engine_runner(plan, profiles, names_in, names_out, meta.version_compatible)
    tol: Tolerance = settings.tensorrt.tolerances.get(meta.precision, Tolerance())
    largest = max(p.batch[2] for p in profiles)
    batch_size = min(settings.parity.batch_size, largest)
    report = compare(reference, candidate, heldout_batches(exported.spec, splits.test, batch_size, settings.parity.samples),
                     names_out, lambda _name: tol, settings.tensorrt.min_argmax_agreement.get(meta.precision, 0.99),
                     f"onnxruntime:{onnx_path.name}", f"tensorrt:{meta.precision}", getattr(exported, "task",
                                                                                             "classification"),
                     getattr(splits.test, "pairs", ()), settings.tensorrt.min_cosine.get(meta.precision, 0.999),
                     settings.parity.min_neighbour_agreement)
    if not report.passed:
        from common.errors import GateFailure

        raise GateFailure(f"the {meta.precision} TensorRT engine does not match ONNX Runtime: "
                          + "; ".join(report.failures()) + " (try tensorrt.precision = \"fp32\" or a wider tolerance)")
    return PlanResult(plan, meta, report, time.monotonic() - start)


def build_optional(exported, splits, onnx_path: Path, profiles: Sequence[Profile], settings: BuildConfig,
                   out_dir: Path) -> PlanResult:
    """:func:`build_and_verify` as one target among several: with ``tensorrt.mode = "auto"`` a plan that cannot be
    built, does not fit this host or misses parity (an FP16 engine outside its tolerance) is reported and left out
    (:class:`builders.steps.Skipped` with the reason), so the CPU and ONNX Runtime targets still publish. With
    ``"required"`` the same failure stops the build.
    """
    from builders.steps import Skipped

    try:
        return build_and_verify(exported, splits, onnx_path, profiles, settings, out_dir)
    except UserError as exc:  # GateFailure (parity) included; programming errors are not caught
        if settings.tensorrt.mode == "required":
            raise
        raise Skipped(f"left out the optional TensorRT target (tensorrt.mode is 'auto'): {exc}") from None
