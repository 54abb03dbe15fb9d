"""Held-out text for the embedding model (all-MiniLM-L6-v2): real support messages and pairs of related ones.

The messages are the textclf held-out split of the generated support-ticket corpus (``training/corpora``): English
support sentences with intent keywords, filler and product names, 4 to 127 words, so the longest run past MiniLM's
256-token limit and exercise truncation. A pair is a message and the same message with every fourth word dropped
and its words lower-cased, i.e. a paraphrase a search should find: the builders measure recall@1 and
nearest-neighbour agreement on them (``--heldout`` with ``{"text": ..., "pair": ...}`` lines).
"""
from __future__ import annotations

import json
from pathlib import Path

HELD_OUT_SEED = 1234 + 2  # training/models/textclf.py: the held-out split of the default data seed


def messages(n: int, seed: int = HELD_OUT_SEED) -> list[str]:
    from training.corpora import support_tickets

    return [e.text for e in support_tickets.generate(n, seed)]


def paraphrase(text: str) -> str:
    words = text.split()
    kept = [w for i, w in enumerate(words) if i % 4 != 3] or words
    return " ".join(kept).lower()


def pairs(n: int, seed: int = HELD_OUT_SEED) -> list[tuple[str, str]]:
    return [(text, paraphrase(text)) for text in messages(n, seed)]


def write_pairs(path: Path, n: int, seed: int = HELD_OUT_SEED) -> Path:
    """``n`` pairs (``2 n`` sentences) as JSON lines, atomically."""
    from common.files import atomic_write_text

    lines = [json.dumps({"text": a, "pair": b}) + "\n" for a, b in pairs(n, seed)]
    atomic_write_text(Path(path), "".join(lines))
    return Path(path)
