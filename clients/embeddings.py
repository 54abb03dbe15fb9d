"""Embedding models in the client: which output is the embedding, how many texts go in one request, how texts become
the token tensors of an encoder that takes them directly, and how the answers of several requests join into one.

Two ways to reach an embedding model, both through :meth:`clients.client.TritonClient.embed` (and its asyncio twin):

* raw text to a text ensemble (``minilm_text``: input ``text`` BYTES ``[1]``, output ``embedding`` FP32 ``[384]``):
  the server tokenizes;
* pre-tokenized to the encoder itself (``minilm``: ``input_ids``, ``attention_mask``, ``token_type_ids`` INT64
  ``[-1]``): the client tokenizes with the model's ``tokenizer.json`` (``ClientConfig.tokenizer``), truncating to
  the model's maximum length and padding each request to its longest text, with the attention mask marking padding.

A request never holds more texts than the model's ``max_batch_size``; longer lists are split and the answers joined
in order, so a file of thousands of texts is one call.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

from clients.errors import InvalidRequest
from clients.model_info import ModelInfo
from clients.results import EMBEDDING_OUTPUTS, InferenceResult

TOKEN_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
DEFAULT_MAX_LENGTH = 512  # BERT's position limit, when neither the caller nor the model folder says less


def check_texts(model: str, texts: Any) -> list[str]:
    """A list of strings (one string is a list of one); anything else is refused naming what was sent."""
    if isinstance(texts, str):
        return [texts]
    if isinstance(texts, (bytes, bytearray)) or not isinstance(texts, Sequence) and not isinstance(texts, np.ndarray):
        raise InvalidRequest(f"embed '{model}': expected a text or a list of texts, got {type(texts).__name__}")
    texts = list(texts)
    if not texts:
        raise InvalidRequest(f"empty request: no text to embed with model '{model}' (expected at least one string)")
    wrong = next((i for i, t in enumerate(texts) if not isinstance(t, str)), None)
    if wrong is not None:
        raise InvalidRequest(f"embed '{model}': item {wrong} is {type(texts[wrong]).__name__}, expected a string")
    return texts


def embedding_output(info: ModelInfo) -> str:
    """The output that holds the embedding: one named like one (``embedding``...), else the only float output with
    one vector per row. Refused, listing the outputs, for a model that returns none."""
    floats = [t for t in info.outputs if t.datatype in ("FP32", "FP16", "FP64", "BF16")]
    named = [t for t in floats if t.name in EMBEDDING_OUTPUTS]
    if named:
        return named[0].name
    vectors = [t for t in floats if len(t.shape) == 2]  # [rows, dims]; a batching model's shape starts with rows
    if len(vectors) == 1:
        return vectors[0].name
    raise InvalidRequest(f"model '{info.name}' returns no embedding (expected a float output named "
                         f"{' or '.join(EMBEDDING_OUTPUTS)}, or exactly one float vector per row); it returns: "
                         f"{info.describe_outputs()}")


def takes_tokens(info: ModelInfo) -> bool:
    """Whether the model is an encoder fed token tensors (``input_ids`` [+ mask, types]) rather than text."""
    required = [t for t in info.inputs if not t.optional]
    return bool(required) and required[0].name == "input_ids" and all(t.name in TOKEN_INPUTS for t in required)


def chunks(info: ModelInfo, texts: list[str], batch_size: int | None) -> list[list[str]]:
    """Requests of at most ``batch_size`` texts, and never more than the model's ``max_batch_size``."""
    if batch_size is not None and batch_size < 1:
        raise InvalidRequest(f"batch size must be at least 1 (got {batch_size})")
    limit = info.max_batch_size if info.max_batch_size > 0 else len(texts)
    size = min(batch_size or limit, limit)
    return [texts[start:start + size] for start in range(0, len(texts), size)]


def model_max_length(tokenizer_file: Path) -> int | None:
    """The sequence limit the model declares beside its tokenizer: ``max_seq_length`` of a sentence-transformers
    folder, or the ``max_length`` parameter of the Triton tokenizer model whose version folder holds the file
    (``minilm_tokenizer/1/tokenizer.json``: what the server's own tokenizer step truncates to)."""
    import json

    for name in ("sentence_bert_config.json", "tokenizer_config.json"):
        path = tokenizer_file.parent / name
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        value = data.get("max_seq_length") or data.get("model_max_length")
        if isinstance(value, int) and 0 < value < 100_000:
            return value
    served = tokenizer_file.parent.parent / "config.pbtxt"
    if served.is_file():
        from common.triton_config import load_config_file

        try:
            parameters = load_config_file(served).parameters
        except Exception:  # not a Triton configuration after all: no limit from it
            return None
        if "max_length" in parameters and parameters["max_length"].string_value.isdigit():
            return int(parameters["max_length"].string_value)
    return None


class TokenEncoder:
    """A model's ``tokenizer.json`` turning texts into right-padded ``input_ids``/``attention_mask``/``token_type_ids``.

    Truncation is to ``max_length``: the caller's, else the ``max_seq_length`` of a sentence-transformers folder, else
    512. The file's own padding setting (a fixed 128 in all-MiniLM-L6-v2's) is replaced by padding to the longest
    text of the request, which is what the server's tokenizer step does too.
    """

    def __init__(self, path: str | Path, max_length: int | None = None):
        from tokenizers import Tokenizer

        path = Path(path)
        if not path.is_file():
            raise InvalidRequest(f"tokenizer file {path} does not exist (expected the model's tokenizer.json)")
        try:
            tokenizer = Tokenizer.from_file(str(path))
        except Exception as exc:  # the tokenizers library raises plain Exceptions on bad JSON
            raise InvalidRequest(f"{path} is not a Hugging Face tokenizers file: {exc}") from None
        self.max_length = max_length or model_max_length(path) or DEFAULT_MAX_LENGTH
        tokenizer.no_padding()
        tokenizer.enable_truncation(self.max_length)
        pad = tokenizer.token_to_id("[PAD]")
        self.pad_id = 0 if pad is None else pad
        self._tokenizer = tokenizer
        self.path = path

    def encode(self, texts: Sequence[str]) -> dict[str, np.ndarray]:
        encodings = self._tokenizer.encode_batch(list(texts))
        length = max(1, max(len(e.ids) for e in encodings))
        ids = np.full((len(encodings), length), self.pad_id, dtype=np.int64)
        mask = np.zeros((len(encodings), length), dtype=np.int64)
        types = np.zeros((len(encodings), length), dtype=np.int64)
        for row, e in enumerate(encodings):
            n = len(e.ids)
            ids[row, :n], mask[row, :n], types[row, :n] = e.ids, e.attention_mask, e.type_ids
        return {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}

    def token_counts(self, texts: Sequence[str]) -> list[int]:
        """Tokens per text after truncation (what a tokens/s figure counts)."""
        return [len(e.ids) for e in self._tokenizer.encode_batch(list(texts))]


def request_inputs(info: ModelInfo, texts: list[str], encoder: TokenEncoder | None) -> Any:
    """What one request sends: the texts themselves, or for an encoder the token tensors it declares."""
    if not takes_tokens(info):
        return texts
    if encoder is None:
        raise InvalidRequest(f"model '{info.name}' takes token ids ({info.describe_inputs()}), not text: embed through "
                             f"its text ensemble (e.g. '{info.name}_text') or pass the model's tokenizer.json "
                             "(--tokenizer / ClientConfig.tokenizer)")
    arrays = encoder.encode(texts)
    names = {t.name for t in info.inputs}
    return {name: array.astype(info.input(name).numpy_dtype, copy=False) for name, array in arrays.items()
            if name in names}


def join(results: list[InferenceResult], output: str, latency_s: float) -> InferenceResult:
    """One result for a call that took several requests: outputs concatenated in order, attempts summed."""
    first = results[0]
    outputs = {name: np.concatenate([r.outputs[name] for r in results]) for name in first.outputs}
    joined = InferenceResult(model=first.model, version=first.version, protocol=first.protocol, outputs=outputs,
                             latency_s=latency_s, attempts=sum(r.attempts for r in results),
                             retries=sum(r.retries for r in results), extra={"requests": len(results)})
    joined.embeddings = np.asarray(outputs[output], dtype=np.float32).reshape(len(outputs[output]), -1)
    return joined


def vector_problem(vectors: Any, dims: int, rows: int, tolerance: float = 1e-3) -> str | None:
    """Why ``vectors`` is not ``rows`` finite, L2-normalised vectors of ``dims`` values (None when it is): what a load
    test checks on every answer of an embedding model."""
    vectors = np.asarray(vectors)
    if vectors.shape != (rows, dims):
        return f"embedding shape {list(vectors.shape)}, expected [{rows}, {dims}]"
    if not np.isfinite(vectors).all():
        return "embedding has NaN or infinite values"
    norms = np.linalg.norm(vectors.astype(np.float64), axis=1)
    if np.abs(norms - 1.0).max() > tolerance:
        return f"embedding norm {norms.min():.4f}..{norms.max():.4f}, expected 1 (L2-normalised)"
    return None
