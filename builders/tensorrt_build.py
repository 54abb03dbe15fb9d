"""ONNX → TensorRT plan with the TensorRT 10 Python API, verified against ONNX Runtime, with its metadata beside it.

Runs where TensorRT and a CUDA GPU exist (NGC TensorRT/Triton images; ``pip install .[gpu]``). On other machines
:func:`unavailable_reason` says why the step is skipped, and everything around the build (profiles, metadata, configs,
the compatibility check) is plain Python in :mod:`builders.shapes`, :mod:`builders.tensorrt_meta` and
:mod:`builders.triton_configs`.

What a build does:

* parses the ONNX file with ``trt.OnnxParser`` (parser errors are reported with the node that failed);
* one optimization profile per declared profile (min/opt/max of every input, :func:`builders.shapes.derive_profiles`);
* precision flags: FP16, or INT8 with an ``IInt8EntropyCalibrator2`` fed from the *validation* split at the
  calibration profile's opt shapes, its cache persisted (``tensorrt.calibration_cache``) so rebuilds skip calibration;
* ``WORKSPACE`` memory-pool limit, ``builder_optimization_level``, optional hardware / version compatibility;
* a timing cache loaded from and saved back to ``tensorrt.timing_cache`` (later builds reuse the measured tactics);
* parity of the engine against ONNX Runtime on held-out inputs with tolerances per precision (NaN/Inf fail it);
* ``model.plan.json`` with the TensorRT version, GPU name and compute capability, profiles, precision and hashes, and
  a compatibility check of that metadata against this host before the plan is handed on.
"""
from __future__ import annotations

import datetime as _dt
import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from common.errors import UserError
from common.files import atomic_write_bytes, atomic_write_text, sha256_file
from builders.parity import ParityReport, compare
from builders.runners import heldout_batches, ort_runner, ort_session
from builders.settings import BuildConfig, Tolerance
from builders.shapes import Profile
from builders.tensorrt_meta import PlanMetadata, PlanTensor, ensure_compatible, host_info, metadata_path

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


def _calibrator(trt, exported, splits, profile: Profile, batches: int, cache_path: Path):
    import torch

    input_names = [t.name for t in exported.manifest.inputs]
    pad = float(exported.manifest.preprocessing.get("pad_id", 0))
    opt = {name: r.opt for name, r in profile.inputs.items()}
    batch_size = next(iter(opt.values()))[0]
    source = heldout_batches(exported.spec, splits.val, batch_size, limit=batches * batch_size)

    class EntropyCalibrator(trt.IInt8EntropyCalibrator2):
        def __init__(self):
            trt.IInt8EntropyCalibrator2.__init__(self)
            self._batches = iter(source)
            self._held: list = []

        def get_batch_size(self):
            return batch_size

        def get_batch(self, names):
            try:
                batch = next(self._batches)
            except StopIteration:
                return None
            feeds = dict(zip(input_names, batch.inputs))
            self._held = [torch.from_numpy(_fit(feeds[name], opt[name], pad)).cuda() for name in names]
            torch.cuda.synchronize()  # the copies must land before TensorRT reads the buffers on its own stream
            return [int(t.data_ptr()) for t in self._held]

        def read_calibration_cache(self):
            return cache_path.read_bytes() if cache_path.is_file() else None

        def write_calibration_cache(self, cache):
            atomic_write_bytes(cache_path, bytes(cache))

    return EntropyCalibrator()


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
    trt_profiles = []
    for profile in profiles:
        opt_profile = builder.create_optimization_profile()
        for name, r in profile.inputs.items():
            opt_profile.set_shape(name, r.min, r.opt, r.max)
        config.add_optimization_profile(opt_profile)
        trt_profiles.append(opt_profile)
    if cfg.precision == "int8":
        config.set_flag(trt.BuilderFlag.INT8)
        cache = Path(str(cfg.calibration_cache).format(model=exported.manifest.model))
        cache.parent.mkdir(parents=True, exist_ok=True)
        config.int8_calibrator = _calibrator(trt, exported, splits, profiles[0], cfg.calibration_batches, cache)
        config.set_calibration_profile(trt_profiles[0])
    if cfg.hardware_compatibility == "ampere_plus":
        config.hardware_compatibility_level = trt.HardwareCompatibilityLevel.AMPERE_PLUS
    if cfg.version_compatible:
        config.set_flag(trt.BuilderFlag.VERSION_COMPATIBLE)
    timing_path = Path(cfg.timing_cache)
    timing_path.parent.mkdir(parents=True, exist_ok=True)
    timing = config.create_timing_cache(timing_path.read_bytes() if timing_path.is_file() else b"")
    config.set_timing_cache(timing, ignore_mismatch=False)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise UserError(f"TensorRT failed to build an engine from {onnx_path} (see the TensorRT log above)")
    atomic_write_bytes(timing_path, bytes(config.get_timing_cache().serialize()))
    plan = out_dir / "model.plan"
    atomic_write_bytes(plan, bytes(serialized))

    runtime = trt.Runtime(logger)
    engine = runtime.deserialize_cuda_engine(plan.read_bytes())
    inputs, outputs = [], []
    for index in range(engine.num_io_tensors):
        name = engine.get_tensor_name(index)
        tensor = PlanTensor(name=name, dtype=_DTYPES.get(engine.get_tensor_dtype(name).name, engine.get_tensor_dtype(name).name.lower()),
                            shape=[int(d) for d in engine.get_tensor_shape(name)])
        (inputs if engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT else outputs).append(tensor)
    major, minor = torch.cuda.get_device_capability(0)
    meta = PlanMetadata(
        tensorrt_version=trt.__version__, gpu_name=torch.cuda.get_device_name(0), compute_capability=f"{major}.{minor}",
        precision=cfg.precision, hardware_compatibility=cfg.hardware_compatibility,
        version_compatible=cfg.version_compatible, profiles=[p.to_dict() for p in profiles], inputs=inputs,
        outputs=outputs, onnx_sha256=sha256_file(onnx_path), plan_sha256=sha256_file(plan),
        workspace_mib=cfg.workspace_mib, optimization_level=cfg.optimization_level,
        built_at=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"))
    atomic_write_text(metadata_path(plan), meta.model_dump_json(indent=2) + "\n")
    return plan, meta


def engine_runner(plan: Path, profiles: Sequence[Profile], input_names: Sequence[str], output_names: Sequence[str]):
    """Run a plan with the TensorRT runtime on torch CUDA buffers, choosing the profile that fits each batch."""
    import tensorrt as trt
    import torch

    logger = trt.Logger(trt.Logger.WARNING)
    engine = trt.Runtime(logger).deserialize_cuda_engine(plan.read_bytes())
    if engine is None:
        raise UserError(f"TensorRT could not deserialize {plan}")
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
    candidate = engine_runner(plan, profiles, names_in, names_out)
    tol: Tolerance = settings.tensorrt.tolerances.get(meta.precision, Tolerance())
    largest = max(p.batch[2] for p in profiles)
    batch_size = min(settings.parity.batch_size, largest)
    report = compare(reference, candidate, heldout_batches(exported.spec, splits.test, batch_size, settings.parity.samples),
                     names_out, lambda _name: tol, settings.tensorrt.min_argmax_agreement.get(meta.precision, 0.99),
                     f"onnxruntime:{onnx_path.name}", f"tensorrt:{meta.precision}")
    if not report.passed:
        from common.errors import GateFailure

        raise GateFailure(f"the {meta.precision} TensorRT engine does not match ONNX Runtime: "
                          + "; ".join(report.failures()) + " (try tensorrt.precision = \"fp32\" or a wider tolerance)")
    return PlanResult(plan, meta, report, time.monotonic() - start)
