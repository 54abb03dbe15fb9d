"""What a TensorRT plan was built for, written next to it, and the check that refuses a plan the host cannot run.

A serialized engine only deserializes with the TensorRT version that built it (unless built version-compatible) and
only runs on GPUs of the compute capability it was built for (unless built hardware-compatible, Ampere and newer).
Triton reports a mismatch only when it loads the model, with an opaque deserialization error. So every plan gets
``model.plan.json`` (:class:`PlanMetadata`) and :func:`check_compatible` compares it with :func:`host_info` before a
plan is published or served, naming the rebuild that is needed. Pure Python (NVML through ``nvidia-ml-py``), so it is
tested on CPU machines.
"""
from __future__ import annotations

import importlib.util
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from common.errors import UserError
from builders.onnx_graph import GraphSignature, GraphTensor

METADATA_SUFFIX = ".json"


class PlanTensor(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    dtype: str
    shape: list[int]  # -1 for dynamic axes, batch first


class PlanMetadata(BaseModel):
    """Schema of ``model.plan.json``."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    format_version: Literal[1] = 1
    tensorrt_version: str
    gpu_name: str
    compute_capability: str = Field(pattern=r"^\d+\.\d+$")
    precision: Literal["fp32", "fp16", "int8"]
    hardware_compatibility: Literal["none", "ampere_plus"] = "none"
    version_compatible: bool = False
    profiles: list[dict] = Field(description="builders.shapes.Profile.to_dict() per optimization profile")
    inputs: list[PlanTensor]
    outputs: list[PlanTensor]
    onnx_sha256: str
    plan_sha256: str
    workspace_mib: int
    optimization_level: int
    built_at: str

    def signature(self) -> GraphSignature:
        def tensors(items):
            return {t.name: GraphTensor(t.name, t.dtype, tuple(d if d >= 0 else "?" for d in t.shape)) for t in items}

        return GraphSignature(tensors(self.inputs), tensors(self.outputs))

    def max_batch(self, profile_indices: list[int] | None = None) -> int:
        chosen = [p for p in self.profiles if profile_indices is None or p["index"] in profile_indices]
        return max((r["max"][0] for p in chosen for r in p["inputs"].values()), default=0)


def metadata_path(plan: str | Path) -> Path:
    plan = Path(plan)
    return plan.with_name(plan.name + METADATA_SUFFIX)


def read_metadata(plan: str | Path) -> PlanMetadata:
    from pydantic import ValidationError

    from common.config import format_validation_error

    path = metadata_path(plan)
    if not path.is_file():
        raise UserError(f"{path} is missing: every plan needs its metadata (rebuild with `python -m builders tensorrt`)")
    try:
        return PlanMetadata.model_validate(json.loads(path.read_text(encoding="utf-8")))
    except json.JSONDecodeError as exc:
        raise UserError(f"{path}: not valid JSON ({exc})") from None
    except ValidationError as exc:
        raise UserError(format_validation_error(exc, str(path))) from None


@dataclass(frozen=True)
class HostInfo:
    """The TensorRT version and the GPUs this process can use (empty when absent), in CUDA's visible order."""

    tensorrt_version: str | None
    gpus: tuple[tuple[str, str], ...]  # (name, compute capability "9.0")


def _visible(entries: list[str] | None, index: int, uuid: str) -> bool:
    """Whether NVML device ``index`` / ``uuid`` is among ``CUDA_VISIBLE_DEVICES`` (None: the variable is unset)."""
    if entries is None or any(not (e.isdigit() or e.startswith("GPU-")) for e in entries):
        return True  # unset, or MIG instance ids NVML's device list cannot be matched against: keep every GPU
    for entry in entries:
        if entry.isdigit() and int(entry) == index:
            return True
        if entry.startswith("GPU-") and uuid.startswith(entry):
            return True
    return False


def host_info() -> HostInfo:
    """This host's TensorRT and the GPUs CUDA will use: NVML lists every GPU of the machine (or of the container),
    so ``CUDA_VISIBLE_DEVICES`` (indices or ``GPU-`` UUID prefixes) narrows the list the way CUDA and Triton do."""
    import os

    trt_version = None
    if importlib.util.find_spec("tensorrt") is not None:
        import tensorrt

        trt_version = tensorrt.__version__
    visible_env = os.environ.get("CUDA_VISIBLE_DEVICES")
    entries = None if visible_env is None else [e.strip() for e in visible_env.split(",") if e.strip()]
    gpus: list[tuple[str, str]] = []
    try:
        import pynvml

        pynvml.nvmlInit()
        try:
            for index in range(pynvml.nvmlDeviceGetCount()):
                handle = pynvml.nvmlDeviceGetHandleByIndex(index)
                uuid = pynvml.nvmlDeviceGetUUID(handle)
                uuid = uuid.decode() if isinstance(uuid, bytes) else uuid
                if not _visible(entries, index, uuid):
                    continue
                name = pynvml.nvmlDeviceGetName(handle)
                major, minor = pynvml.nvmlDeviceGetCudaComputeCapability(handle)
                gpus.append((name.decode() if isinstance(name, bytes) else name, f"{major}.{minor}"))
        finally:
            pynvml.nvmlShutdown()
    except Exception:  # no driver / no NVML: no GPU here
        pass
    return HostInfo(trt_version, tuple(gpus))


def _parse(version: str) -> tuple[int, ...]:
    return tuple(int(p) for p in version.split(".")[:3] if p.isdigit())


def _cc(text: str) -> tuple[int, int]:
    major, minor = text.split(".")
    return int(major), int(minor)


def check_compatible(meta: PlanMetadata, host: HostInfo, source: str = "model.plan") -> list[str]:
    """Reasons the plan cannot run here (empty when it can). Each names the rebuild that is needed."""
    built = f"built with TensorRT {meta.tensorrt_version} for {meta.gpu_name} (compute capability {meta.compute_capability})"
    problems = []
    if host.tensorrt_version is None:
        problems.append(f"{source}: {built}, but TensorRT is not installed here; serve it from the NGC Triton image "
                        f"with TensorRT {meta.tensorrt_version}, or use the onnxruntime/CPU configuration")
    else:
        have, want = _parse(host.tensorrt_version), _parse(meta.tensorrt_version)
        if meta.version_compatible:
            ok = have[:1] == want[:1] and have >= want
        else:
            ok = have == want
        if not ok:
            problems.append(f"{source}: {built}, but this host has TensorRT {host.tensorrt_version}; rebuild the plan "
                            f"here (`python -m builders tensorrt ...`) or use an image with TensorRT {meta.tensorrt_version}")
    if not host.gpus:
        problems.append(f"{source}: {built}, but this host has no CUDA GPU; run it on a GPU host, or serve the "
                        "onnxruntime/CPU configuration")
    else:
        want_cc = _cc(meta.compute_capability)
        fits = []
        for name, cc in host.gpus:
            if meta.hardware_compatibility == "ampere_plus":
                fits.append(_cc(cc) >= (8, 0))
            else:
                fits.append(_cc(cc) == want_cc)
        need = ("an Ampere or newer GPU" if meta.hardware_compatibility == "ampere_plus"
                else f"compute capability {meta.compute_capability}")
        if not any(fits):
            names = ", ".join(f"{n} (compute capability {c})" for n, c in host.gpus)
            problems.append(f"{source}: {built}, but this host has {names}; the plan needs {need}: rebuild it on "
                            "this GPU (`python -m builders tensorrt ...`), or build with "
                            "tensorrt.hardware_compatibility = \"ampere_plus\"")
        elif not all(fits):
            # Triton places a KIND_GPU instance group on every visible GPU: one that cannot run the plan fails the load
            good = ",".join(str(i) for i, ok in enumerate(fits) if ok)
            bad = ", ".join(f"GPU {i} {n} (compute capability {c})"
                            for i, ((n, c), ok) in enumerate(zip(host.gpus, fits)) if not ok)
            problems.append(f"{source}: {built}, but this host mixes GPUs and {bad} cannot run it (the plan needs "
                            f"{need}, and Triton places instances on every visible GPU): make only the matching GPUs "
                            f"visible to the builder and to Triton (CUDA_VISIBLE_DEVICES={good}, or "
                            "NVIDIA_VISIBLE_DEVICES / the compose device list), or build with "
                            "tensorrt.hardware_compatibility = \"ampere_plus\" when every GPU is Ampere or newer")
    return problems


def version_compatible_plans(repository: str | Path) -> list[Path]:
    """Plans in a model repository (``<model>/<version>/*.plan``) whose metadata says they were built
    version-compatible. Triton's TensorRT backend loads those only with ``--backend-config=tensorrt,
    version-compatible=true`` (it then lets its runtime deserialize engines that carry host code)."""
    root = Path(repository)
    found = []
    for meta_file in sorted(root.glob("*/*/*.plan" + METADATA_SUFFIX)) if root.is_dir() else []:
        try:
            if json.loads(meta_file.read_text(encoding="utf-8")).get("version_compatible") is True:
                found.append(meta_file.with_name(meta_file.name[: -len(METADATA_SUFFIX)]))
        except (OSError, ValueError):
            continue  # unreadable metadata is the linter's and the compatibility check's business
    return found


def ensure_compatible(meta: PlanMetadata, host: HostInfo | None = None, source: str = "model.plan") -> None:
    problems = check_compatible(meta, host or host_info(), source)
    if problems:
        raise UserError("; ".join(problems))
