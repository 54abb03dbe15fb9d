"""Turn what a caller has (numpy arrays, Python lists, raw strings) into the named tensors a model expects, and
refuse anything that cannot work before it goes on the wire.

Accepted forms:

* a numpy array, for a model with one (required) input;
* a mapping ``{input name: array or list}``;
* a string or a sequence of strings: sent as-is to a model whose single input is ``BYTES`` (e.g. the
  ``textclf_text`` ensemble), or tokenized with a ``tokenizer.json`` for a model that takes ``input_ids``.

numpy arrays are checked strictly (their dtype is a statement of what the caller meant); Python lists and JSON values
have no dtype of their own and are converted to the model's datatype. Every refusal is an
:class:`~clients.errors.InvalidRequest` whose message says what was sent and what the model expects.

The checks run before anything is sent, so the request never reaches the cases Triton 2.51's own HTTP/JSON parser
answers with 500 (malformed JSON, data that does not fit the shape, strings or floats for an integer input): the
client builds every request from typed numpy arrays with tritonclient. It also refuses what the served runtimes refuse
with invalid-argument (see ``model_repository/README.md``): NaN or Inf in floating-point inputs, empty texts.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from clients.errors import InvalidRequest
from clients.model_info import ModelInfo, TensorInfo

TOKEN_INPUT_DTYPES = ("INT64", "INT32")


def wire_datatype(array: np.ndarray) -> str:
    """Triton's datatype name for a numpy array (strings and objects are BYTES)."""
    from tritonclient.utils import np_to_triton_dtype

    if array.dtype.kind in ("U", "S", "O"):
        return "BYTES"
    name = np_to_triton_dtype(array.dtype)
    return name or str(array.dtype)


def describe_array(name: str, array: np.ndarray) -> str:
    return f"{name} {wire_datatype(array)} [{', '.join(str(d) for d in array.shape)}]"


class Tokenizer:
    """A Hugging Face ``tokenizers`` file that turns texts into right-padded INT64 ``input_ids``."""

    def __init__(self, path: str | Path):
        from tokenizers import Tokenizer as HFTokenizer

        path = Path(path)
        if not path.is_file():
            raise InvalidRequest(f"tokenizer file {path} does not exist (expected the tokenizer.json published with the model)")
        try:
            self._tokenizer = HFTokenizer.from_file(str(path))
        except Exception as exc:  # the tokenizers library raises plain Exceptions on bad JSON
            raise InvalidRequest(f"{path} is not a Hugging Face tokenizers file: {exc}") from None
        pad_id = self._tokenizer.token_to_id("[PAD]")
        self.pad_id = 0 if pad_id is None else pad_id
        self.path = path

    def encode(self, texts: Sequence[str], dtype: np.dtype) -> np.ndarray:
        encodings = self._tokenizer.encode_batch(list(texts))
        length = max(1, max(len(e.ids) for e in encodings))
        ids = np.full((len(encodings), length), self.pad_id, dtype=dtype)
        for row, encoding in enumerate(encodings):
            ids[row, : len(encoding.ids)] = encoding.ids
        return ids


def _is_text(value: Any) -> bool:
    if isinstance(value, str):
        return True
    return (isinstance(value, Sequence) and not isinstance(value, (bytes, bytearray)) and len(value) > 0
            and all(isinstance(v, str) for v in value))


def _text_inputs(info: ModelInfo, texts: Sequence[str], tokenizer: Tokenizer | None) -> dict[str, np.ndarray]:
    if len(texts) == 0:
        raise InvalidRequest(f"empty request: no text to send to model '{info.name}' (expected at least one string)")
    blank = next((i for i, text in enumerate(texts) if not text.strip()), None)
    if blank is not None:
        raise InvalidRequest(f"text {blank} is empty: model '{info.name}' needs at least one non-space character per "
                             "text (the server refuses empty texts too)")
    required = [t for t in info.inputs if not t.optional]
    if len(required) == 1 and required[0].is_bytes:
        spec = required[0]
        array = np.array([t.encode("utf-8") for t in texts], dtype=np.object_)
        # one text per row: [n, 1] for the usual dims [1]; the shape check reports anything else
        trailing = max(len(spec.shape) - 1, 0)
        return {spec.name: array.reshape((len(texts),) + (1,) * trailing)}
    if len(required) == 1 and required[0].datatype in TOKEN_INPUT_DTYPES:
        spec = required[0]
        if tokenizer is None:
            raise InvalidRequest(
                f"model '{info.name}' takes token ids ({spec.describe(info.max_batch_size)}), not text: send the text "
                f"to its text ensemble (e.g. '{info.name}_text') or pass the tokenizer.json it was trained with "
                "(--tokenizer)")
        return {spec.name: tokenizer.encode(texts, spec.numpy_dtype)}
    raise InvalidRequest(f"model '{info.name}' does not take text; it expects: {info.describe_inputs()}")


def _as_array(spec: TensorInfo | None, name: str, value: Any) -> np.ndarray:
    """numpy arrays pass through untouched; lists and scalars take the model's datatype."""
    if isinstance(value, np.ndarray):
        return value
    if spec is None:
        return np.asarray(value)
    if spec.is_bytes:
        return np.asarray(value, dtype=np.object_)
    try:
        return np.asarray(value, dtype=spec.numpy_dtype)
    except (TypeError, ValueError) as exc:
        raise InvalidRequest(f"input '{name}': cannot convert the values sent to {spec.datatype} ({exc})") from None


def normalize(info: ModelInfo, inputs: Any, tokenizer: Tokenizer | None = None) -> dict[str, np.ndarray]:
    """Name the caller's inputs (see the module docstring for the accepted forms)."""
    if inputs is None:
        raise InvalidRequest(f"empty request: nothing to send to model '{info.name}'; it expects: {info.describe_inputs()}")
    if _is_text(inputs):
        return _text_inputs(info, [inputs] if isinstance(inputs, str) else list(inputs), tokenizer)
    if isinstance(inputs, Mapping):
        if not inputs:
            raise InvalidRequest(f"empty request: no inputs for model '{info.name}'; it expects: {info.describe_inputs()}")
        return {str(name): _as_array(info.input(str(name)), str(name), value) for name, value in inputs.items()}
    required = [t for t in info.inputs if not t.optional]
    if len(required) != 1:
        raise InvalidRequest(f"model '{info.name}' has {len(required)} inputs, so pass a mapping of input name to "
                             f"array; it expects: {info.describe_inputs()}")
    if isinstance(inputs, (list, tuple)) and len(inputs) == 0:
        raise InvalidRequest(f"empty request: no rows for model '{info.name}'; it expects: {info.describe_inputs()}")
    return {required[0].name: _as_array(required[0], required[0].name, inputs)}


def check(info: ModelInfo, arrays: Mapping[str, np.ndarray]) -> int:
    """Check names, datatypes, shapes and batch size against the model; return the batch size (1 if unbatched)."""
    model = f"model '{info.name}'" + (f" version {info.version}" if info.version else "")
    expects = f"it expects: {info.describe_inputs()}"
    unknown = [name for name in arrays if info.input(name) is None]
    if unknown:
        sent = ", ".join(describe_array(n, arrays[n]) for n in unknown)
        raise InvalidRequest(f"{model} has no input named {', '.join(repr(n) for n in unknown)} (sent {sent}); {expects}")
    missing = [t.name for t in info.inputs if not t.optional and t.name not in arrays]
    if missing:
        raise InvalidRequest(f"{model}: missing input {', '.join(repr(n) for n in missing)}; {expects}")
    batch_sizes = set()
    for name, array in arrays.items():
        spec = info.input(name)
        assert spec is not None
        sent = describe_array(name, array)
        expected = spec.describe(info.max_batch_size)
        got_type = wire_datatype(array)
        if got_type != spec.datatype:
            raise InvalidRequest(f"{model}: input '{name}' has datatype {got_type} but the model expects "
                                 f"{spec.datatype} (sent {sent}; expected {expected})")
        if array.size == 0:
            raise InvalidRequest(f"empty request: input '{name}' of {model} holds no values (sent {sent}; expected {expected})")
        if array.dtype.kind == "f" and not np.isfinite(array).all():
            where = np.argwhere(~np.isfinite(array))[0].tolist()
            raise InvalidRequest(f"{model}: input '{name}' holds NaN or Inf (first at index {where}); the model accepts "
                                 f"finite values only (sent {sent})")
        if not _shape_matches(spec.shape, array.shape):
            raise InvalidRequest(f"{model}: input '{name}' has shape [{', '.join(map(str, array.shape))}] but the "
                                 f"model expects [{', '.join(_dims(spec, info.max_batch_size))}] (sent {sent})")
        if info.max_batch_size > 0:
            batch = array.shape[0]
            if batch > info.max_batch_size:
                raise InvalidRequest(f"{model}: batch of {batch} rows in input '{name}' is above the model's "
                                     f"max_batch_size {info.max_batch_size} (sent {sent}); split the request")
            batch_sizes.add(batch)
    if len(batch_sizes) > 1:
        sent = ", ".join(describe_array(n, a) for n, a in arrays.items())
        raise InvalidRequest(f"{model}: inputs disagree on the batch size (sent {sent}); every input needs the same "
                             "number of rows")
    return batch_sizes.pop() if batch_sizes else 1


def _shape_matches(expected: tuple[int, ...], got: tuple[int, ...]) -> bool:
    if len(expected) != len(got):
        return False
    return all(e < 0 or e == g for e, g in zip(expected, got))


def _dims(spec: TensorInfo, max_batch_size: int) -> list[str]:
    dims = [str(d) if d >= 0 else "any" for d in spec.shape]
    if max_batch_size > 0 and dims:
        dims[0] = f"batch<={max_batch_size}"
    return dims


def prepare(info: ModelInfo, inputs: Any, tokenizer: Tokenizer | None = None, validate: bool = True
            ) -> tuple[dict[str, np.ndarray], int]:
    """Named, checked tensors ready to send, and the batch size."""
    arrays = normalize(info, inputs, tokenizer)
    if not validate:
        first = next(iter(arrays.values()))
        return arrays, (first.shape[0] if info.max_batch_size > 0 and first.ndim else 1)
    return arrays, check(info, arrays)
