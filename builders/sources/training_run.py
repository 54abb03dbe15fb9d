"""A training run directory: ``manifest.json`` + ``model.safetensors`` (+ ``tokenizer.json``), see common/manifest.py.

The network is rebuilt by the spec factory the manifest names (``factory``, default
:data:`common.manifest.DEFAULT_FACTORY`), imported by its dotted name: the builders never import ``training``
themselves. The spec gives the architecture and data schemas, the module, the held-out split (the run's own test
split, rebuilt deterministically) and its collate function.

A run that fine-tuned a Hugging Face model writes ``arch = {"source": "hf", "path": "hf", "task": ...}`` and the merged
model folder ``RUN_DIR/<path>/``; such a run is delegated to :class:`builders.sources.huggingface.HuggingFaceSource`
with the manifest's labels.
"""
from __future__ import annotations

from pathlib import Path

from common.errors import UserError
from common.manifest import DEFAULT_FACTORY, MANIFEST_NAME, read_manifest
from builders.sources.base import Batch, HeldOut, ModelSource, Preprocessing, Signature, import_object


def _tensor_batches(spec, dataset, batch_size: int, limit: int | None):
    count = len(dataset) if limit is None else min(limit, len(dataset))
    for start in range(0, count, batch_size):
        samples = [dataset[i] for i in range(start, min(start + batch_size, count))]
        inputs, targets = spec.collate(samples)
        yield Batch([t.numpy() for t in inputs], targets.numpy())


class TrainingRunSource(ModelSource):
    kind = "training-run"

    def __init__(self, run_dir: str | Path, name: str | None = None, heldout: str | Path | None = None,
                 verify: bool = True):
        from common.config import validate

        self.run_dir = run_dir = Path(run_dir)
        self.run_manifest = manifest = read_manifest(run_dir, verify=verify)
        where = run_dir / MANIFEST_NAME
        self.factory = manifest.factory or DEFAULT_FACTORY
        get_spec = import_object(self.factory, f"{where}: factory")
        try:
            # a spec class (a spec file outside any package) is the spec itself; a registry function is asked by name
            self.spec = get_spec() if isinstance(get_spec, type) else get_spec(manifest.model)
        except UserError as exc:
            raise UserError(f"{where}: model {manifest.model!r}: {exc}") from None
        self.arch = validate(self.spec.Arch, manifest.arch, f"{where}: arch")
        self.data = validate(self.spec.Data, manifest.training.get("data", {}), f"{where}: training.data")
        self.name = name or manifest.model
        self._heldout_path = heldout
        self._model = None
        self._splits = None
        pre = dict(manifest.preprocessing)
        tokenizer = run_dir / manifest.tokenizer.file if manifest.tokenizer else None
        self.signature = Signature(
            task="classification", inputs=list(manifest.inputs), outputs=list(manifest.outputs),
            labels=list(manifest.labels),
            preprocessing=Preprocessing(tokenizer_file=tokenizer, max_length=pre.get("max_length"),
                                        pad_id=int(pre.get("pad_id", 0))))
        self.hints = pre  # the manifest's serving hints, as recorded (cls_id and other model-specific keys)
        self.origin = {"kind": self.kind, "path": str(run_dir.resolve()), "factory": self.factory,
                       "weights_sha256": manifest.weights.sha256,
                       "tokenizer_sha256": manifest.tokenizer.sha256 if manifest.tokenizer else None,
                       "data_version": manifest.data_version, "code_version": manifest.code_version,
                       "parent_checkpoint": manifest.parent_checkpoint.model_dump() if manifest.parent_checkpoint
                       else None, "metrics": manifest.metrics, "created_at": manifest.created_at}
        self.module()  # weights that do not fit the architecture fail when the run is opened, not mid-build

    def architecture(self) -> dict:
        return dict(self.run_manifest.arch)

    def serving_view(self):
        import dataclasses

        view = super().serving_view()
        return dataclasses.replace(view, preprocessing={**self.hints, **view.preprocessing})

    def module(self):
        if self._model is None:
            from common.weights import load_weights

            model = self.spec.build(self.arch)
            load_weights(model, self.run_dir / self.run_manifest.weights.file,
                         f"the architecture in manifest.json (model {self.run_manifest.model!r})")
            self._model = model.eval()
        return self._model

    def example_inputs(self, batch_size: int) -> tuple:
        import torch

        return tuple(self.spec.example_inputs(self.arch, batch_size, torch.Generator().manual_seed(0)))

    def splits(self):
        if self._splits is None:
            self._splits = self.spec.load_data(self.data, self.arch)
        return self._splits

    def _split(self, which: str) -> HeldOut:
        dataset = getattr(self.splits(), which)
        identity = {"split": which, "samples": len(dataset), "data_version": self.run_manifest.data_version,
                    "tokenizer_sha256": self.run_manifest.tokenizer.sha256 if self.run_manifest.tokenizer else None}
        return HeldOut(lambda batch_size, limit: _tensor_batches(self.spec, dataset, batch_size, limit),
                       len(dataset), "labels", f"{self.run_dir}: the run's {which} split", identity)

    def heldout(self) -> HeldOut:
        if self._heldout_path is not None:
            from builders.sources.heldout import read_heldout

            return read_heldout(self._heldout_path, self.signature)
        return self._split("test")

    def calibration(self) -> HeldOut:
        return self._split("val")


def is_hf_run(manifest) -> bool:
    return isinstance(manifest.arch, dict) and manifest.arch.get("source") == "hf"


HELDOUT_NAME = "heldout.jsonl"  # written by the fine-tuning trainer next to hf/ (texts with their labels)


def open_run(run_dir: str | Path, name: str | None = None, heldout: str | Path | None = None,
             task: str | None = None) -> ModelSource:
    """The source of a training run: its own factory's spec, or the Hugging Face folder a fine-tuning run wrote."""
    run_dir = Path(run_dir)
    manifest = read_manifest(run_dir, verify=True)
    if not is_hf_run(manifest):
        return TrainingRunSource(run_dir, name, heldout)
    from builders.sources.huggingface import HuggingFaceSource

    arch = manifest.arch
    folder = arch.get("path")
    if not isinstance(folder, str) or not folder or Path(folder).is_absolute() or ".." in Path(folder).parts:
        raise UserError(f"{run_dir / MANIFEST_NAME}: field 'arch.path' must name a folder inside the run "
                        f"(got {folder!r})")
    run_task = task or arch.get("task", "classification")
    if heldout is None and (run_dir / HELDOUT_NAME).is_file():
        heldout = run_dir / HELDOUT_NAME  # the labelled test split a fine-tuning run hands over: gate on accuracy
    source = HuggingFaceSource(run_dir / folder, run_task, name or manifest.model, heldout,
                               labels=list(manifest.labels) or None if run_task == "classification" else None)
    source.origin.update({"kind": "training-run+hf", "run_dir": str(run_dir.resolve()),
                          "data_version": manifest.data_version, "code_version": manifest.code_version,
                          "metrics": manifest.metrics, "created_at": manifest.created_at,
                          "parent_checkpoint": manifest.parent_checkpoint.model_dump()
                          if manifest.parent_checkpoint else None})
    return source
