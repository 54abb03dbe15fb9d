"""Request payloads for load tests and comparisons, prepared once and saved as ``.npz``.

Load generators must not spend their CPU building inputs, and every configuration in a comparison must see the same
inputs, so payloads are generated up front from real data where the model is known:

* ``digits``: the images of scikit-learn's digits data set (raw 0..16 intensities), one image per request;
* ``textclf``: token ids of held-out messages of the generated support-ticket corpus, tokenized with the training run's
  ``tokenizer.json``; either their natural lengths (a realistic mix) or exactly ``seq_len`` tokens;
* ``textclf_text``: the raw held-out messages as strings;
* ``minilm_text`` (and any other model whose one input is ``text``): the embedding benchmark's sentences
  (benchmarks/sentences.py: held-out messages plus longer ones up to 256 tokens) as strings;
* ``minilm``: the same sentences tokenized with all-MiniLM-L6-v2's tokenizer (``input_ids``, ``attention_mask``,
  ``token_type_ids``, truncated to 256 tokens), what the ensemble's tokenizer step would send to the encoder;
* anything else: synthetic values that match the model's metadata.

Each payload is one request: a dict from input name to an array with a leading batch dimension of 1.
"""
from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from common.errors import UserError
from common.files import atomic_writer

TEXT_TEST_SEED_OFFSET = 2  # textclf's held-out split uses generator seed data.seed + 2 (training/models/textclf.py)


@dataclass(frozen=True)
class InputSpec:
    name: str
    datatype: str  # Triton datatype: FP32, INT64, BYTES, ...
    shape: tuple[int, ...]  # without the batch dimension; -1 = dynamic


NUMPY_OF = {"FP32": np.float32, "FP16": np.float16, "INT64": np.int64, "INT32": np.int32, "BOOL": np.bool_,
            "BYTES": np.object_}


def model_inputs(http_url: str, model: str, timeout_s: float = 5.0) -> tuple[list[InputSpec], int]:
    """Inputs and max_batch_size of a served model, from Triton's metadata/config (clear errors when absent)."""
    import tritonclient.http as httpclient
    from tritonclient.utils import InferenceServerException

    try:
        client = httpclient.InferenceServerClient(http_url, connection_timeout=timeout_s, network_timeout=timeout_s)
        if not client.is_server_live():
            raise UserError(f"Triton at http://{http_url} is not live")
    except (ConnectionError, OSError, InferenceServerException) as exc:
        raise UserError(f"cannot reach Triton at http://{http_url} ({exc}); start it with `python -m clients serve`") from None
    try:
        if not client.is_model_ready(model):
            import os

            from clients.admin_token import read_token_for  # the index is restricted (clients serve)

            token = os.environ.get("TRITON_ADMIN_TOKEN") or read_token_for(http_url)
            headers = {"triton-admin-token": token} if token else None
            index = [m.get("name") for m in client.get_model_repository_index(headers=headers)]
            raise UserError(f"model {model!r} is not ready on http://{http_url} (models there: {', '.join(sorted(set(index))) or 'none'})")
        metadata = client.get_model_metadata(model)
        config = client.get_model_config(model)
    except InferenceServerException as exc:
        raise UserError(f"model {model!r} on http://{http_url}: {exc.message()}") from None
    finally:
        client.close()
    max_batch = int(config.get("max_batch_size", 0))
    specs = []
    for item in metadata["inputs"]:
        shape = tuple(int(d) for d in item["shape"])
        specs.append(InputSpec(item["name"], item["datatype"], shape[1:] if max_batch > 0 else shape))
    return specs, max_batch


def embedding_output_of(http_url: str, model: str, timeout_s: float = 5.0) -> tuple[str, int] | None:
    """(output name, dims) when ``model`` returns an embedding (a float output named like one, one vector per row)."""
    import tritonclient.http as httpclient

    from clients.results import EMBEDDING_OUTPUTS

    client = httpclient.InferenceServerClient(http_url, connection_timeout=timeout_s, network_timeout=timeout_s)
    try:
        outputs = client.get_model_metadata(model)["outputs"]
    finally:
        client.close()
    for item in outputs:
        dims = [int(d) for d in item["shape"]]
        if item["name"] in EMBEDDING_OUTPUTS and item["datatype"].startswith("FP") and dims and dims[-1] > 0:
            return item["name"], dims[-1]
    return None


def _digits_images(n: int, seed: int) -> list[np.ndarray]:
    from sklearn.datasets import load_digits

    images = load_digits().images.astype(np.float32)
    order = np.random.default_rng(seed).permutation(len(images))
    return [images[order[i % len(images)]][None, None, :, :] for i in range(n)]


def _held_out_texts(n: int, run_dir: Path | None, seed: int) -> list[str]:
    from training.corpora import support_tickets

    data_seed = 1234
    if run_dir is not None and (run_dir / "manifest.json").is_file():
        manifest = json.loads((run_dir / "manifest.json").read_text())
        data_seed = int(manifest.get("training", {}).get("data", {}).get("seed", data_seed))
    texts = [e.text for e in support_tickets.generate(max(n, 64), data_seed + TEXT_TEST_SEED_OFFSET)]
    random.Random(seed).shuffle(texts)
    return texts[:n]


def _token_ids(n: int, run_dir: Path | None, seed: int, seq_len: int | None) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    tokenizer_file = run_dir / "tokenizer.json" if run_dir else None
    if tokenizer_file is not None and tokenizer_file.is_file():
        from tokenizers import Tokenizer

        tokenizer = Tokenizer.from_file(str(tokenizer_file))
        encodings = tokenizer.encode_batch(_held_out_texts(n, run_dir, seed))
        sequences = [np.asarray(e.ids, dtype=np.int64) for e in encodings]
        vocab = tokenizer.get_vocab_size()
    else:
        vocab = 8000
        lengths = rng.integers(8, 128, size=n)
        sequences = [np.concatenate([[2], rng.integers(3, vocab, size=int(length) - 1)]).astype(np.int64)
                     for length in lengths]
    if seq_len is not None:  # exactly seq_len real-looking tokens: tile the message, keep [CLS] first
        fixed = []
        for ids in sequences:
            body = ids[1:] if len(ids) > 1 else rng.integers(3, vocab, size=8)
            reps = int(np.ceil((seq_len - 1) / len(body)))
            fixed.append(np.concatenate([ids[:1], np.tile(body, reps)[: seq_len - 1]]).astype(np.int64))
        sequences = fixed
    return [s[None, :] for s in sequences]


def _synthetic(spec: InputSpec, n: int, rng: np.random.Generator, seq_len: int | None) -> list[np.ndarray]:
    shape = tuple((seq_len or 16) if d < 0 else d for d in spec.shape)
    if spec.datatype == "BYTES":
        return [np.array([b"synthetic request"] * int(np.prod(shape)), dtype=np.object_).reshape((1, *shape)) for _ in range(n)]
    dtype = NUMPY_OF.get(spec.datatype)
    if dtype is None:
        raise UserError(f"input {spec.name!r} has datatype {spec.datatype}, which the synthetic payloads do not support "
                        f"(supported: {', '.join(NUMPY_OF)})")
    if np.issubdtype(dtype, np.integer):
        return [rng.integers(0, 100, size=(1, *shape)).astype(dtype) for _ in range(n)]
    return [rng.random((1, *shape)).astype(dtype) for _ in range(n)]


def make_payloads(model: str, inputs: list[InputSpec], n: int = 512, seed: int = 0, seq_len: int | None = None,
                  run_dir: Path | None = None, source: str | None = None) -> list[dict[str, np.ndarray]]:
    """``n`` single-request payloads for ``model``; ``source`` overrides the choice made from the model name."""
    if n <= 0:
        raise UserError(f"the number of payloads must be positive (got {n})")
    source = source or model
    names = [s.name for s in inputs]
    if source == "digits" and names == ["image"]:
        columns = {"image": _digits_images(n, seed)}
    elif source == "textclf" and names == ["input_ids"]:
        columns = {"input_ids": _token_ids(n, run_dir, seed, seq_len)}
    elif source == "textclf_text" and names == ["text"]:
        texts = _held_out_texts(n, run_dir, seed)
        columns = {"text": [np.array([[t.encode("utf-8")]], dtype=np.object_) for t in texts]}
    elif source != "synthetic" and names == ["text"] and inputs[0].datatype == "BYTES":
        from benchmarks.sentences import benchmark_sentences

        columns = {"text": [np.array([[t.encode("utf-8")]], dtype=np.object_) for t in benchmark_sentences(n, seed)]}
    elif source == "minilm" and set(names) <= {"input_ids", "attention_mask", "token_type_ids"} and "input_ids" in names:
        from benchmarks.sentences import MAX_TOKENS, benchmark_sentences, minilm_dir
        from clients.embeddings import TokenEncoder

        encoder = TokenEncoder(minilm_dir() / "tokenizer.json", MAX_TOKENS)
        encoded = [encoder.encode([t]) for t in benchmark_sentences(n, seed)]
        columns = {name: [e[name] for e in encoded] for name in names}
    else:
        rng = np.random.default_rng(seed)
        columns = {spec.name: _synthetic(spec, n, rng, seq_len) for spec in inputs}
    return [{name: columns[name][i] for name in names} for i in range(n)]


def save_payloads(path: str | Path, payloads: list[dict[str, np.ndarray]]) -> Path:
    """Store payloads without pickle: strings as UTF-8 bytes arrays, one array per (request, input)."""
    arrays = {}
    for i, payload in enumerate(payloads):
        for name, value in payload.items():
            if value.dtype == np.object_:
                value = np.array([v if isinstance(v, bytes) else str(v).encode() for v in value.ravel()],
                                 dtype=np.bytes_).reshape(value.shape)
            arrays[f"{i}/{name}"] = value
    path = Path(path)
    with atomic_writer(path, "wb") as fh:
        np.savez(fh, **arrays)
    return path


def load_payloads(path: str | Path) -> list[dict[str, np.ndarray]]:
    with np.load(path, allow_pickle=False) as data:
        requests: dict[int, dict[str, np.ndarray]] = {}
        for key in data.files:
            index, name = key.split("/", 1)
            value = data[key]
            if value.dtype.kind == "S":
                value = value.astype(np.object_)
            requests.setdefault(int(index), {})[name] = value
    return [requests[i] for i in sorted(requests)]
