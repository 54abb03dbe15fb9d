"""Any ``nn.Module``: a Python factory ``package.module:function`` + weights in safetensors + a signature TOML.

The factory is called without arguments and must return the module; its ``forward`` takes the signature's inputs
positionally and returns a tensor (one output) or a tuple in the signature's output order. The weights are loaded strictly (a
missing or unexpected key, or a size mismatch, names the weights file and the key). The module is then exported,
checked and gated like a trained one.
"""
from __future__ import annotations

from pathlib import Path

from common.errors import UserError
from common.files import sha256_file
from common.weights import load_weights
from builders.sources.base import HeldOut, ModelSource, generated_heldout, import_object, read_signature




class FactorySource(ModelSource):
    kind = "factory"

    def __init__(self, factory: str, weights: str | Path, signature_path: str | Path, task: str | None = None,
                 name: str | None = None, heldout: str | Path | None = None):
        from torch import nn

        self.factory = factory
        weights = Path(weights)
        signature_path = Path(signature_path)
        self.signature = read_signature(signature_path, task)
        build = import_object(factory, "--factory")
        if not weights.is_file():
            raise UserError(f"--weights {weights} does not exist (expected a .safetensors file of the module's "
                            "state dict)")
        try:
            module = build()
        except Exception as exc:
            raise UserError(f"--factory {factory!r}: calling it failed ({type(exc).__name__}: {exc})") from None
        if not isinstance(module, nn.Module):
            raise UserError(f"--factory {factory!r} returned {type(module).__name__}; expected a torch.nn.Module")
        load_weights(module, weights)
        self._module = module.eval()
        self.name = name or factory.rpartition(":")[2].replace(".", "_")
        self._heldout_path = heldout
        tok = self.signature.preprocessing.tokenizer_file
        self.origin = {"kind": self.kind, "factory": factory, "path": str(weights.resolve()),
                       "weights_sha256": sha256_file(weights), "signature": str(signature_path.resolve()),
                       "signature_sha256": sha256_file(signature_path),
                       "tokenizer_sha256": sha256_file(tok) if tok else None}

    def module(self):
        return self._module

    def heldout(self) -> HeldOut:
        if self._heldout_path is not None:
            from builders.sources.heldout import read_heldout

            return read_heldout(self._heldout_path, self.signature)
        return generated_heldout(self.signature)
