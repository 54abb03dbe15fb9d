"""Loading safetensors weights into a PyTorch module strictly, with one line that names what does not fit.

Shared by the trainer's hand-off (:func:`training.export.load_exported`) and the builders' model sources: both must
refuse weights that do not match the network instead of serving a half-initialised model.
"""
from __future__ import annotations

from pathlib import Path

from common.errors import UserError


def load_weights(module, weights: str | Path, what: str = "the module") -> None:
    """Strictly load a safetensors state dict into ``module``; a :class:`UserError` names what does not fit."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        state = load_file(str(weights))
    except (SafetensorError, OSError, ValueError) as exc:
        raise UserError(f"{weights}: cannot read safetensors ({exc})") from None
    try:
        result = module.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # size mismatches
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        raise UserError(f"{weights} does not match {what}: {lines[1] if len(lines) > 1 else lines[0]}") from None
    problems = []
    if result.missing_keys:
        problems.append(f"missing {', '.join(result.missing_keys[:5])}")
    if result.unexpected_keys:
        problems.append(f"unexpected {', '.join(result.unexpected_keys[:5])}")
    if problems:
        raise UserError(f"{weights} does not match {what}: " + "; ".join(problems))
