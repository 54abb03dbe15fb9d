"""Every knob of the builders as typed configuration (defaults included), loadable from TOML/YAML.

``python -m builders build --config builders.toml`` reads a file with any subset of these tables; the defaults are what
the demo uses. Keeping the numbers here (and nowhere else) means a reviewer can see every tolerance, margin and limit
that decides whether a model is published, and a test can change one without patching code.

Example ``builders.toml``::

    [parity]
    samples = 512
    [parity.outputs.logits]
    atol = 2e-4
    [quantize]
    max_accuracy_drop = 0.005
    [serving]
    max_batch_size = 32
    [[shapes.profiles]]
    batch = {min = 1, opt = 8, max = 32}
    dims = {sequence = {min = 1, opt = 64, max = 128}}
"""
from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class Strict(BaseModel):
    """Unknown keys are errors: a typo in a configuration file must not be silently ignored."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())


class Tolerance(Strict):
    """Element-wise closeness, numpy.allclose semantics: ``|a - b| <= atol + rtol * |b|``."""

    atol: float = Field(1e-4, ge=0)
    rtol: float = Field(1e-3, ge=0)


class ExportConfig(Strict):
    opset: int = Field(18, ge=13, le=23, description="ONNX opset the graph is exported with (pinned)")
    example_batch: int = Field(4, ge=2, description="batch size of the tracing example (>= 2 keeps the batch axis dynamic)")
    max_batch_dim: int = Field(4096, ge=2, description="upper bound declared for the dynamic batch axis at export")
    max_ir_version: int = Field(10, ge=7, description="highest ONNX IR version written (ONNX Runtime refuses newer ones)")
    simplify: bool = Field(True, description="simplify the graph with onnxslim (kept only when parity still holds)")


class ParityConfig(Strict):
    """How an exported graph is compared with the PyTorch model on held-out inputs."""

    samples: int = Field(256, ge=1, description="held-out samples compared (the start of the test split)")
    batch_size: int = Field(32, ge=1, description="samples per comparison batch (mixed sequence lengths for text)")
    default: Tolerance = Field(default_factory=Tolerance)
    outputs: dict[str, Tolerance] = Field(
        default_factory=lambda: {"probabilities": Tolerance(atol=1e-5, rtol=1e-3)},
        description="per-output tolerances overriding `default`",
    )
    min_argmax_agreement: float = Field(0.999, ge=0, le=1, description="fraction of samples whose predicted class must agree")
    min_cosine: float = Field(0.9999, ge=-1, le=1,
                              description="embeddings: lowest cosine similarity of any held-out example's vector to the "
                                          "reference (PyTorch, and sentence-transformers when the model has it)")
    min_neighbour_agreement: float = Field(0.98, ge=0, le=1,
                                           description="embeddings: fraction of held-out queries whose nearest neighbour "
                                                       "is the same as the reference's")
    generated_samples: int = Field(64, ge=2, description="inputs generated from the signature when no --heldout is given")

    def tolerance(self, output: str) -> Tolerance:
        return self.outputs.get(output, self.default)


class QuantizeConfig(Strict):
    enabled: bool = Field(True, description="build an INT8 (dynamic quantization) variant for the CPU path")
    op_types: list[str] = Field(default_factory=lambda: ["MatMul", "Gemm"],
                                description="operators to quantize (ConvInteger has no INT8-weight CPU kernel)")
    per_channel: bool = Field(True, description="one INT8 scale per output channel of each weight: finer than one per "
                                                "tensor (all-MiniLM-L6-v2: lowest cosine to sentence-transformers 0.992 vs 0.990)")
    reduce_range: bool = Field(False, description="7-bit weights (helps on CPUs without VNNI)")
    max_accuracy_drop: float = Field(0.01, ge=0, le=1, description="refuse INT8 when held-out accuracy drops more than this (absolute)")
    min_argmax_agreement: float = Field(0.98, ge=0, le=1,
                                        description="classification without labels: INT8 must predict FP32's class this often")
    min_cosine: float = Field(0.99, ge=-1, le=1, description="embeddings: lowest cosine of an INT8 vector to FP32's (and "
                                                             "to the external reference's)")
    min_neighbour_agreement: float = Field(0.9, ge=0, le=1,
                                           description="embeddings: INT8 and FP32 nearest neighbours agree this often")
    tolerance: Tolerance = Field(default_factory=lambda: Tolerance(atol=5e-2, rtol=5e-2),
                                 description="generic models: INT8 outputs within this of FP32's, element-wise")
    latency_batch_size: int = Field(8, ge=1, description="batch size of the in-process latency comparison")
    latency_iterations: int = Field(30, ge=1)
    serve_int8: bool = Field(False, description="make the default CPU config serve the INT8 file when it was accepted")
    fp32_after_gelu: bool = Field(
        True, description="keep MatMuls whose input comes from a GELU (a transformer's feed-forward down-projection) in "
                          "FP32: GELU outputs have outliers that per-tensor INT8 activations clip. Measured on "
                          "all-MiniLM-L6-v2: lowest cosine to FP32 0.91 with them quantized, 0.992 without")


class ShapeRange(Strict):
    min: int = Field(ge=1)
    opt: int = Field(ge=1)
    max: int = Field(ge=1)

    @model_validator(mode="after")
    def _ordered(self):
        if not self.min <= self.opt <= self.max:
            raise ValueError(f"expected min <= opt <= max, got min={self.min} opt={self.opt} max={self.max}")
        return self


class ProfileConfig(Strict):
    """One optimization profile: a range for the batch axis and for every other symbolic axis (by its name)."""

    batch: ShapeRange | None = Field(None, description="default: 1 / serving.opt_batch_size / serving.max_batch_size")
    dims: dict[str, ShapeRange] = Field(default_factory=dict, description="e.g. {sequence = {min=1, opt=64, max=128}}")


class ShapesConfig(Strict):
    profiles: list[ProfileConfig] = Field(default_factory=lambda: [ProfileConfig()], min_length=1)
    default_opt_length: int = Field(64, ge=1, description="opt size of a sequence axis that no profile declares")


class QueueConfig(Strict):
    """Bounded queue: a request that waits too long is rejected (the client retries elsewhere) instead of piling up."""

    max_queue_size: int = Field(1024, ge=1)
    timeout_microseconds: int = Field(2_000_000, ge=1)
    allow_timeout_override: bool = True


class DynamicBatchingConfig(Strict):
    enabled: bool = True
    max_queue_delay_microseconds: int = Field(
        0, ge=0, description="0: batch whatever is queued when an instance is free. Measured on the 2-core CPU path "
                             "(benchmarks/results/compare-report.md): any delay costs latency at low load and buys "
                             "nothing at high load, where the queue already fills batches")
    preferred_batch_sizes: list[int] = Field(default_factory=lambda: [8, 16, 32])
    preserve_ordering: bool = False
    queue: QueueConfig = Field(default_factory=QueueConfig)


class ServingConfig(Strict):
    max_batch_size: int = Field(64, ge=1)
    opt_batch_size: int = Field(8, ge=1)
    dynamic_batching: DynamicBatchingConfig = Field(default_factory=DynamicBatchingConfig)
    cpu_instances: int = Field(2, ge=1, description="python-backend instances of the CPU path (one per core served "
                                                    "the most on 2 cores, with cpu_runtime.intra_op_num_threads 1)")
    gpu_instances: int = Field(1, ge=1, description="instances per GPU for the TensorRT / ONNX Runtime configs")
    onnxruntime_kind: Literal["KIND_AUTO", "KIND_GPU", "KIND_CPU"] = "KIND_AUTO"
    warmup_batch_sizes: list[int] = Field(default_factory=lambda: [1, 2, 4, 8, 16, 32, 64],
                                          description="batch buckets warmed for every profile (clipped to max_batch_size)")
    warmup_count: int = Field(1, ge=1)

    @model_validator(mode="after")
    def _fits(self):
        too_big = [b for b in self.dynamic_batching.preferred_batch_sizes if b > self.max_batch_size]
        if too_big:
            raise ValueError(f"dynamic_batching.preferred_batch_sizes {too_big} exceed max_batch_size {self.max_batch_size}")
        if self.opt_batch_size > self.max_batch_size:
            raise ValueError(f"opt_batch_size {self.opt_batch_size} exceeds max_batch_size {self.max_batch_size}")
        return self


class CpuRuntimeConfig(Strict):
    """ONNX Runtime session options of the CPU python-backend model (passed as config parameters)."""

    intra_op_num_threads: int = Field(
        1, ge=0, description="0 = ONNX Runtime's default (all cores). One thread per instance, with one instance per "
                             "core (serving.cpu_instances), served the most requests on the 2-core CPU path")
    inter_op_num_threads: int = Field(1, ge=0)
    allow_spinning: bool = Field(False, description="busy-wait threads compete with Triton's own on few cores")
    graph_optimization_level: Literal["ORT_DISABLE_ALL", "ORT_ENABLE_BASIC", "ORT_ENABLE_EXTENDED", "ORT_ENABLE_ALL"] = "ORT_ENABLE_ALL"
    execution_mode: Literal["sequential", "parallel"] = "sequential"
    max_padding_ratio: float = Field(
        1.25, ge=0, description="requests merged into one ONNX Runtime run carry at most this many padded tokens per "
                                "real one; a batch of very different lengths runs as several runs of similar length "
                                "(0 = always one run, padded to the longest). Only for inputs the runtime pads")
    queue_policy: bool = Field(
        False, description="write serving.dynamic_batching.queue into the python-backend configs too. Off by default: "
                           "on Triton 2.51 (the nvidia-pytriton wheel) any default_queue_policy field makes about 0.3-0.6 % "
                           "of requests to python-backend models wait ~500 ms (measured at concurrency 1: 7-15 of 2500 "
                           "requests vs none of 5000 without a policy); the GPU/ONNX Runtime configs keep the policy")


class TensorRTConfig(Strict):
    mode: Literal["auto", "off", "required"] = Field(
        "auto", description="auto: build when TensorRT and a GPU are present; required: fail without them")
    precision: Literal["fp32", "fp16", "int8"] = "fp16"
    workspace_mib: int = Field(2048, ge=16)
    optimization_level: int = Field(3, ge=0, le=5, description="builder_optimization_level")
    timing_cache: Path = Field(Path(".cache/tensorrt/timing.cache"), description="persisted across builds")
    calibration_cache: Path = Field(Path(".cache/tensorrt/{model}.calibration.cache"))
    calibration_batches: int = Field(16, ge=1, description="INT8: batches of the validation split used for calibration")
    hardware_compatibility: Literal["none", "ampere_plus"] = "none"
    version_compatible: bool = False
    tolerances: dict[str, Tolerance] = Field(
        default_factory=lambda: {"fp32": Tolerance(atol=1e-4, rtol=1e-3), "fp16": Tolerance(atol=2e-2, rtol=2e-2),
                                 "int8": Tolerance(atol=1e-1, rtol=1e-1)},
        description="engine vs ONNX Runtime, per precision")
    min_argmax_agreement: dict[str, float] = Field(default_factory=lambda: {"fp32": 0.999, "fp16": 0.99, "int8": 0.97})
    min_cosine: dict[str, float] = Field(default_factory=lambda: {"fp32": 0.9999, "fp16": 0.999, "int8": 0.99},
                                         description="embeddings: lowest cosine of an engine's vector to ONNX Runtime's, "
                                                     "per precision (element-wise tolerances do not gate embeddings)")


class GateConfig(Strict):
    max_accuracy_drop: float = Field(0.005, ge=0, le=1,
                                     description="the task's held-out quality (accuracy, or recall@1 for embeddings) may "
                                                 "be at most this much below the serving version's")


class PublishConfig(Strict):
    keep_versions: int = Field(3, ge=1, description="versions kept per model (older ones are removed)")
    work_dir: Path = Field(Path(".cache/builds"), description="build directories, reports, reproduce scripts")
    load_timeout_s: float = Field(120.0, gt=0, description="live rollout: how long Triton may take to load a version")


class BuildConfig(Strict):
    export: ExportConfig = Field(default_factory=ExportConfig)
    parity: ParityConfig = Field(default_factory=ParityConfig)
    quantize: QuantizeConfig = Field(default_factory=QuantizeConfig)
    shapes: ShapesConfig = Field(default_factory=ShapesConfig)
    serving: ServingConfig = Field(default_factory=ServingConfig)
    cpu_runtime: CpuRuntimeConfig = Field(default_factory=CpuRuntimeConfig)
    tensorrt: TensorRTConfig = Field(default_factory=TensorRTConfig)
    gate: GateConfig = Field(default_factory=GateConfig)
    publish: PublishConfig = Field(default_factory=PublishConfig)
