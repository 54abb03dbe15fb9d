"""Held-out data a user brings: ``--heldout file.jsonl`` (texts) or ``--heldout file.npz`` (tensors).

JSON lines, one example per line, all of one kind::

    {"text": "my card was charged twice"}                                 texts: parity only
    {"text": "my card was charged twice", "label": "billing"}             labels (name or index): accuracy
    {"text": "how do I reset my password", "pair": "forgot my login"}     pairs (embeddings): recall@1, neighbours

Texts are tokenized with the model's own ``tokenizer.json`` (truncated to its maximum length), exactly as the served
tokenizer step does. An ``.npz`` holds one array per signature input (first axis = examples) and optionally
``labels`` (class indexes). A malformed line or array stops the build with one line naming the file, the line or
field, and what was expected.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from common.errors import UserError
from common.files import sha256_file
from builders.sources.base import HeldOut, Signature, rows_heldout

#: signature input name -> attribute of a ``tokenizers`` Encoding
ENCODING_FIELDS = {"input_ids": "ids", "attention_mask": "attention_mask", "token_type_ids": "type_ids"}


def load_tokenizer(path: Path, max_length: int | None):
    """The model's tokenizer with padding off (batches are padded per batch) and truncation at ``max_length``."""
    from tokenizers import Tokenizer

    try:
        tokenizer = Tokenizer.from_file(str(path))
    except Exception as exc:
        raise UserError(f"{path}: not a Hugging Face tokenizers file ({str(exc).splitlines()[0]})") from None
    tokenizer.no_padding()
    if max_length:
        tokenizer.enable_truncation(max_length=int(max_length))
    return tokenizer


def encode_texts(signature: Signature, texts: list[str]) -> list[list[np.ndarray]]:
    """Per text, one unpadded array per signature input (each input must be a field a tokenizer produces)."""
    pre = signature.preprocessing
    if pre.tokenizer_file is None:
        raise UserError("text held-out data needs a tokenizer: the model's signature has no "
                        "preprocessing.tokenizer_file")
    unknown = [t.name for t in signature.inputs if t.name not in ENCODING_FIELDS]
    if unknown:
        raise UserError(f"text held-out data: the tokenizer cannot produce input(s) {unknown} (it produces "
                        f"{', '.join(ENCODING_FIELDS)}); give tensors in an .npz instead")
    tokenizer = load_tokenizer(pre.tokenizer_file, pre.max_length)
    encodings = tokenizer.encode_batch(texts)
    rows = []
    for enc in encodings:
        rows.append([np.asarray(getattr(enc, ENCODING_FIELDS[t.name]), dtype=t.dtype) for t in signature.inputs])
    return rows


def _label_index(value, labels: list[str], where: str) -> int:
    if isinstance(value, str) and value in labels:
        return labels.index(value)
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < len(labels):
        return value
    raise UserError(f"{where}: field 'label' is {value!r}; expected one of {labels} or an index 0..{len(labels) - 1}")


def read_jsonl(path: Path, signature: Signature) -> HeldOut:
    texts, targets, partners = [], [], []
    kind = None
    lines = path.read_text(encoding="utf-8").splitlines()
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise UserError(f"{where}: not valid JSON ({exc.msg}); expected one object per line like "
                            '{"text": "...", "label": "..."}') from None
        if not isinstance(record, dict):
            raise UserError(f"{where}: expected a JSON object with a 'text' field, got {type(record).__name__}")
        text = record.get("text")
        if not isinstance(text, str) or not text.strip():
            raise UserError(f"{where}: field 'text' must be a non-empty string (got {text!r})")
        line_kind = "labels" if "label" in record else "pairs" if "pair" in record else "texts"
        if kind is None:
            kind = line_kind
        elif line_kind != kind:
            raise UserError(f"{where}: this line is a {line_kind[:-1]} example but earlier lines are {kind}; "
                            "expected every line to have the same fields")
        if kind == "labels":
            if signature.task != "classification":
                raise UserError(f"{where}: field 'label' given, but the model's task is {signature.task} "
                                "(labels apply to classification)")
            targets.append(_label_index(record["label"], signature.labels, where))
        elif kind == "pairs":
            pair = record["pair"]
            if not isinstance(pair, str) or not pair.strip():
                raise UserError(f"{where}: field 'pair' must be a non-empty string (got {pair!r})")
            partners.append(pair)
        texts.append(text)
    if not texts:
        raise UserError(f"{path}: no examples (expected one JSON object per line)")
    identity = {"split": f"file:{path.name}", "samples": len(texts), "data_version": sha256_file(path),
                "tokenizer_sha256": sha256_file(signature.preprocessing.tokenizer_file)
                if signature.preprocessing.tokenizer_file else None}
    if kind == "pairs":
        all_texts = texts + partners
        rows = encode_texts(signature, all_texts)
        pairs = [(i, len(texts) + i) for i in range(len(texts))]
        return rows_heldout(rows, None, signature, "pairs", str(path), identity, pairs, all_texts)
    rows = encode_texts(signature, texts)
    return rows_heldout(rows, targets if kind == "labels" else None, signature, kind, str(path), identity,
                        texts=texts)


def read_npz(path: Path, signature: Signature) -> HeldOut:
    try:
        data = np.load(path, allow_pickle=False)
    except Exception as exc:
        raise UserError(f"{path}: not a readable .npz file ({str(exc).splitlines()[0]})") from None
    with data:
        arrays = {key: data[key] for key in data.files}
    count = None
    columns = []
    for spec in signature.inputs:
        if spec.name not in arrays:
            raise UserError(f"{path}: array {spec.name!r} is missing; expected one array per input "
                            f"({', '.join(signature.input_names)}) and optionally 'labels'")
        array = arrays[spec.name]
        if array.dtype != np.dtype(spec.dtype):
            raise UserError(f"{path}: array {spec.name!r} has dtype {array.dtype}; the signature says {spec.dtype}")
        if array.ndim != len(spec.shape) or any(isinstance(d, int) and d != s
                                                for d, s in zip(spec.shape[1:], array.shape[1:])):
            raise UserError(f"{path}: array {spec.name!r} has shape {list(array.shape)}; the signature says "
                            f"{list(spec.shape)}")
        if count is not None and array.shape[0] != count:
            raise UserError(f"{path}: array {spec.name!r} has {array.shape[0]} examples, earlier arrays {count}")
        count = array.shape[0]
        columns.append(array)
    targets = None
    if "labels" in arrays:
        labels = arrays["labels"]
        if signature.task != "classification":
            raise UserError(f"{path}: array 'labels' given, but the model's task is {signature.task}")
        if labels.ndim != 1 or labels.shape[0] != count or not np.issubdtype(labels.dtype, np.integer) or \
                (labels.size and (labels.min() < 0 or labels.max() >= len(signature.labels))):
            raise UserError(f"{path}: array 'labels' must be {count} class indexes in 0..{len(signature.labels) - 1}")
        targets = [int(v) for v in labels]
    extra = sorted(set(arrays) - set(signature.input_names) - {"labels"})
    if extra:
        raise UserError(f"{path}: array(s) {extra} are not inputs of the model (expected "
                        f"{', '.join(signature.input_names)} and optionally 'labels')")
    if not count:
        raise UserError(f"{path}: no examples")
    rows = [[c[i] for c in columns] for i in range(count)]
    identity = {"split": f"file:{path.name}", "samples": count, "data_version": sha256_file(path)}
    return rows_heldout(rows, targets, signature, "labels" if targets is not None else "tensors", str(path), identity)


def read_heldout(path: str | Path, signature: Signature) -> HeldOut:
    """``.jsonl`` (texts, labels, pairs) or ``.npz`` (tensors); anything else is refused."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"--heldout {path} does not exist (expected a .jsonl or .npz file)")
    if path.suffix == ".jsonl":
        return read_jsonl(path, signature)
    if path.suffix == ".npz":
        return read_npz(path, signature)
    raise UserError(f"--heldout {path}: unknown format {path.suffix!r} (expected .jsonl or .npz)")
