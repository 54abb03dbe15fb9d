"""Read ``config.pbtxt`` files with Triton's own schema (``model_config.proto``, shipped in tritonclient).

Both the builders' linter and the serving launcher's pre-flight check use this, so a typo in a hand-written config is
reported as ``model_repository/digits/config.pbtxt:7:3: field 'max_batch_sizee' is not a field of
inference.ModelConfig`` before Triton is even started.
"""
from __future__ import annotations

from pathlib import Path

from common.errors import UserError


def parse_config_text(text: str, source: str):
    """Parse protobuf text format into ``inference.ModelConfig``; a :class:`UserError` names file, line and field."""
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    config = model_config_pb2.ModelConfig()
    try:
        text_format.Parse(text, config)
    except text_format.ParseError as exc:
        line, col = getattr(exc, "GetLine", lambda: None)(), getattr(exc, "GetColumn", lambda: None)()
        where = f"{source}:{line}:{col}" if line else source
        message = str(exc).split(" : ", 1)[-1] if line else str(exc)
        raise UserError(f"{where}: {message} (expected Triton's model_config.proto text format)") from None
    return config


def load_config_file(path: str | Path):
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path} does not exist (expected a Triton model configuration)")
    return parse_config_text(path.read_text(encoding="utf-8"), str(path))


def config_to_text(config) -> str:
    from google.protobuf import text_format

    return text_format.MessageToString(config)


def config_path(model_dir: str | Path, config_name: str | None = None) -> Path:
    """The file Triton reads for ``model_dir`` under ``--model-config-name`` (``configs/NAME.pbtxt`` if it exists)."""
    model_dir = Path(model_dir)
    if config_name:
        custom = model_dir / "configs" / f"{config_name}.pbtxt"
        if custom.is_file():
            return custom
    return model_dir / "config.pbtxt"
