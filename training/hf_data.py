"""Labelled text for fine-tuning a pretrained encoder: ``.jsonl`` files, a deterministic split, the base tokenizer.

A data file holds one JSON object per line, ``{"text": "...", "label": "billing"}`` (the label a string or an
integer; extra keys are ignored, blank lines skipped). The classes are the sorted labels of the training file unless
they are given explicitly; every other file (validation, test, the sidecar's new data) may use only those.

Without a validation file, a fixed fraction of each class is held out of the training file: records are ranked by
a hash of (seed, line number, text), so the split depends on the data and the seed only, never on the machine or on
the order Python happens to iterate in.

Texts are tokenized with the base model's own ``tokenizer.json`` (the Hugging Face ``tokenizers`` library, the very
file the serving side loads), truncated to ``max_length``, unpadded; :func:`collate` pads a batch to its longest
sequence and builds the attention mask.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch
from torch.utils.data import Dataset

from common.errors import UserError


@dataclass(frozen=True)
class Record:
    text: str
    label: str
    line: int


def _label_name(value: Any) -> str | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str) and value.strip():
        return value
    return None


def parse_records(items: Sequence[Any], source: str, first_line: Sequence[int] | None = None) -> list[Record]:
    """Records from decoded JSON objects; ``ValueError("SOURCE:LINE: what is wrong (expected ...)")`` otherwise
    (``"SOURCE N: ..."`` with the record's index when ``first_line`` is not given)."""
    out = []
    for i, item in enumerate(items):
        where = f"{source}:{first_line[i]}" if first_line else f"{source} {i}"
        if not isinstance(item, dict):
            raise ValueError(f"{where}: expected a JSON object {{\"text\": ..., \"label\": ...}}")
        text = item.get("text")
        if not isinstance(text, str) or not text.strip():
            raise ValueError(f"{where}: \"text\" must be a non-empty string (got {text!r})")
        label = _label_name(item.get("label"))
        if label is None:
            raise ValueError(f"{where}: \"label\" must be a non-empty string or an integer (got {item.get('label')!r})")
        out.append(Record(text, label, first_line[i] if first_line else i + 1))
    return out


def read_jsonl(path: str | Path) -> list[Record]:
    """Every record of a ``.jsonl`` file; a :class:`UserError` naming the file and line of the first bad one."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"data file {path} does not exist (expected a .jsonl file of {{\"text\": ..., \"label\": ...}} lines)")
    items, lines = [], []
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise UserError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            items.append(json.loads(line))
        except json.JSONDecodeError as exc:
            raise UserError(f"{path}:{number}: not valid JSON ({exc.msg}); expected {{\"text\": ..., \"label\": ...}}") from None
        lines.append(number)
    try:
        records = parse_records(items, str(path), lines)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    if not records:
        raise UserError(f"{path}: no records (expected {{\"text\": ..., \"label\": ...}} lines)")
    return records


def class_names(records: Sequence[Record], explicit: Sequence[str] | None, source: str) -> list[str]:
    """The classes: ``explicit`` if given, else the training labels sorted (numerically when all are integers)."""
    if explicit:
        return list(explicit)
    found = set(r.label for r in records)
    if len(found) < 2:
        raise UserError(f"{source}: a classifier needs at least 2 labels, found {sorted(found)}")
    numeric = all(label.lstrip("-").isdigit() for label in found)
    return sorted(found, key=int) if numeric else sorted(found)


def check_labels(records: Sequence[Record], labels: Sequence[str], source: str) -> list[int]:
    """Class indices of ``records``; a :class:`UserError` naming the first record whose label is unknown."""
    index = {name: i for i, name in enumerate(labels)}
    out = []
    for r in records:
        if r.label not in index:
            raise UserError(f"{source}:{r.line}: label {r.label!r} is not one of the classes {list(labels)}")
        out.append(index[r.label])
    return out


def split_off(records: Sequence[Record], fraction: float, seed: int) -> tuple[list[Record], list[Record]]:
    """(kept, held out): ``fraction`` of each class (at least one when it has two or more), chosen by hash."""
    by_label: dict[str, list[Record]] = {}
    for r in records:
        by_label.setdefault(r.label, []).append(r)
    held: set[int] = set()
    for members in by_label.values():
        count = round(fraction * len(members))
        if len(members) >= 2:
            count = min(max(count, 1), len(members) - 1)
        ranked = sorted(members, key=lambda r: hashlib.sha256(f"{seed}\x00{r.line}\x00{r.text}".encode()).digest())
        held.update(r.line for r in ranked[:count])
    return [r for r in records if r.line not in held], [r for r in records if r.line in held]


class TokenizedRecords(Dataset):
    """(input_ids, token_type_ids, label) per record; the first item's length drives length-grouped batching."""

    def __init__(self, ids: list[list[int]], type_ids: list[list[int]], labels: list[int]):
        self.ids, self.type_ids, self.labels = ids, type_ids, labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        return (torch.tensor(self.ids[i], dtype=torch.int64), torch.tensor(self.type_ids[i], dtype=torch.int64),
                torch.tensor(self.labels[i], dtype=torch.int64))


def load_tokenizer(model_dir: str | Path, max_length: int):
    """The base model's ``tokenizer.json``, truncating at ``max_length`` and not padding (batches pad themselves)."""
    from tokenizers import Tokenizer

    path = Path(model_dir) / "tokenizer.json"
    try:
        tokenizer = Tokenizer.from_file(str(path))
    except Exception as exc:  # a file the tokenizers library cannot read
        raise UserError(f"{path}: not a Hugging Face tokenizers file ({str(exc).splitlines()[0][:160]})") from None
    tokenizer.enable_truncation(max_length=max_length)
    tokenizer.no_padding()
    return tokenizer


def tokenize(tokenizer, records: Sequence[Record], targets: Sequence[int]) -> TokenizedRecords:
    encodings = tokenizer.encode_batch([r.text for r in records])
    return TokenizedRecords([e.ids for e in encodings], [e.type_ids for e in encodings], list(targets))


def collate(samples: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]], pad_id: int):
    """((input_ids, attention_mask, token_type_ids), targets), right-padded to the longest sequence."""
    from torch.nn.utils.rnn import pad_sequence

    ids = pad_sequence([s[0] for s in samples], batch_first=True, padding_value=pad_id)
    mask = pad_sequence([torch.ones_like(s[0]) for s in samples], batch_first=True, padding_value=0)
    type_ids = pad_sequence([s[1] for s in samples], batch_first=True, padding_value=0)
    return (ids, mask, type_ids), torch.stack([s[2] for s in samples])
