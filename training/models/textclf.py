"""``textclf``: a Transformer-encoder intent classifier over the GENERATED support-ticket corpus.

Architecture (defaults are the benchmark size): token embedding (vocabulary ≈ 8k) + sinusoidal positional encoding,
``nn.TransformerEncoder`` (batch-first, d_model 128, 4 heads, 2 layers, feed-forward 512) with a key-padding mask,
mean pooling over the real tokens, layer norm and a linear head.

Input ``input_ids`` is INT64 [batch, sequence], ``sequence`` ≤ ``max_length`` (128), padded with id 0 on the right;
the network derives the padding mask from the ids, so extra right-padding does not change its outputs. Every sequence
starts with ``[CLS]`` (id 2), so no row is all padding. Outputs are ``logits`` and ``probabilities`` [batch, 4].

Tokenizer: a Hugging Face ``tokenizers`` WordLevel model (lower-casing, split on words and punctuation, ``[CLS]``
prepended, truncation at ``max_length``) fitted on the training split. It is saved as ``tokenizer.json`` next to the
weights, and the serving side loads that very file, so text is tokenized identically in training and in Triton.
"""
from __future__ import annotations

import math

import torch
from pydantic import Field, model_validator
from torch import nn
from torch.utils.data import Dataset

from common.manifest import TensorSpec
from training.corpora import support_tickets
from training.models import register
from training.models.base import ModelSpec, Splits, StrictConfig, hash_strings, record_label

PAD, UNK, CLS = "[PAD]", "[UNK]", "[CLS]"
PAD_ID, UNK_ID, CLS_ID = 0, 1, 2


class TextClfArch(StrictConfig):
    vocab_size: int = Field(8192, ge=16, description="upper bound; the fitted vocabulary may be smaller")
    d_model: int = Field(128, gt=0)
    heads: int = Field(4, gt=0)
    layers: int = Field(2, gt=0)
    ff_dim: int = Field(512, gt=0)
    dropout: float = Field(0.1, ge=0.0, lt=1.0)
    max_length: int = Field(128, ge=2, le=4096)
    num_classes: int = Field(len(support_tickets.INTENTS), ge=2)

    @model_validator(mode="after")
    def _heads_divide(self):
        if self.d_model % self.heads:
            raise ValueError(f"d_model ({self.d_model}) must be divisible by heads ({self.heads})")
        return self


class TextClfData(StrictConfig):
    train_size: int = Field(20000, gt=0)
    val_size: int = Field(2000, gt=0)
    test_size: int = Field(2000, gt=0)
    seed: int = 1234
    min_frequency: int = Field(2, ge=1)


def build_tokenizer(texts: list[str], vocab_size: int, min_frequency: int, max_length: int):
    """Fit the WordLevel tokenizer on ``texts`` (deterministic for the same texts)."""
    from tokenizers import Tokenizer, normalizers, pre_tokenizers, processors
    from tokenizers.models import WordLevel
    from tokenizers.trainers import WordLevelTrainer

    tok = Tokenizer(WordLevel(unk_token=UNK))
    tok.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()])
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    trainer = WordLevelTrainer(vocab_size=vocab_size, min_frequency=min_frequency, special_tokens=[PAD, UNK, CLS],
                               show_progress=False)
    tok.train_from_iterator(texts, trainer=trainer)
    tok.post_processor = processors.TemplateProcessing(single=f"{CLS} $A", special_tokens=[(CLS, CLS_ID)])
    tok.enable_truncation(max_length=max_length)
    assert tok.token_to_id(PAD) == PAD_ID and tok.token_to_id(UNK) == UNK_ID and tok.token_to_id(CLS) == CLS_ID
    return tok


def load_tokenizer(json_text: str):
    from tokenizers import Tokenizer

    return Tokenizer.from_str(json_text)


class TokenizedTexts(Dataset):
    def __init__(self, ids: list[list[int]], labels: list[int]):
        self.ids, self.labels = ids, labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        return torch.tensor(self.ids[i], dtype=torch.int64), torch.tensor(self.labels[i], dtype=torch.int64)


def sinusoidal_table(length: int, dim: int) -> torch.Tensor:
    position = torch.arange(length, dtype=torch.float32).unsqueeze(1)
    div = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * (-math.log(10000.0) / dim))
    table = torch.zeros(length, dim)
    table[:, 0::2] = torch.sin(position * div)
    table[:, 1::2] = torch.cos(position * div)
    return table


class TextClassifier(nn.Module):
    def __init__(self, arch: TextClfArch):
        super().__init__()
        self.scale = math.sqrt(arch.d_model)
        self.embed = nn.Embedding(arch.vocab_size, arch.d_model, padding_idx=PAD_ID)
        self.register_buffer("positions", sinusoidal_table(arch.max_length, arch.d_model), persistent=False)
        layer = nn.TransformerEncoderLayer(arch.d_model, arch.heads, arch.ff_dim, arch.dropout, batch_first=True,
                                           norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, arch.layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(arch.d_model)
        self.head = nn.Linear(arch.d_model, arch.num_classes)

    def forward(self, input_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        padding = input_ids == PAD_ID
        x = self.embed(input_ids) * self.scale + self.positions[: input_ids.shape[1]]
        x = self.encoder(x, src_key_padding_mask=padding)
        keep = (~padding).unsqueeze(-1).to(x.dtype)
        pooled = (x * keep).sum(dim=1) / keep.sum(dim=1).clamp(min=1.0)
        logits = self.head(self.norm(pooled))
        return logits, torch.softmax(logits, dim=-1)


@register
class TextClf(ModelSpec):
    name = "textclf"
    description = "Transformer-encoder intent classifier on a generated support-ticket corpus (4 classes)"
    Arch = TextClfArch
    Data = TextClfData

    def inputs(self, arch: TextClfArch) -> list[TensorSpec]:
        return [TensorSpec(name="input_ids", dtype="int64", shape=("batch", "sequence"))]

    def outputs(self, arch: TextClfArch) -> list[TensorSpec]:
        return [
            TensorSpec(name="logits", dtype="float32", shape=("batch", arch.num_classes)),
            TensorSpec(name="probabilities", dtype="float32", shape=("batch", arch.num_classes)),
        ]

    def build(self, arch: TextClfArch) -> nn.Module:
        return TextClassifier(arch)

    @staticmethod
    def held_out_messages(data: TextClfData, n: int):
        """The first ``n`` raw messages of the test split (the demo and clients send raw text, not token ids)."""
        return support_tickets.generate(n, data.seed + 2)

    def load_data(self, data: TextClfData, arch: TextClfArch) -> Splits:
        # three disjoint generator seeds: the held-out messages are never seen in training
        train = support_tickets.generate(data.train_size, data.seed)
        val = support_tickets.generate(data.val_size, data.seed + 1)
        test = self.held_out_messages(data, data.test_size)
        tokenizer = build_tokenizer([e.text for e in train], arch.vocab_size, data.min_frequency, arch.max_length)

        def encode(examples):
            encodings = tokenizer.encode_batch([e.text for e in examples])
            return TokenizedTexts([enc.ids for enc in encodings], [e.label for e in examples])

        version = hash_strings(["support_tickets-v1", *(f"{e.label}\t{e.text}" for e in train + val + test)])
        return Splits(encode(train), encode(val), encode(test), list(support_tickets.INTENTS), version,
                      {"tokenizer_json": tokenizer.to_str()})

    def decode_records(self, records, splits, arch):
        """``{"text": "...", "label": "billing" or 0}`` per record, tokenized with the run's fitted tokenizer."""
        texts, targets = [], []
        for i, record in enumerate(records):
            text = record.get("text")
            if not isinstance(text, str) or not text.strip():
                raise ValueError(f"record {i}: text must be a non-empty string")
            texts.append(text)
            targets.append(record_label(record, i, splits.labels))
        tokenizer = load_tokenizer(splits.artifacts["tokenizer_json"])
        return TokenizedTexts([enc.ids for enc in tokenizer.encode_batch(texts)], targets)

    def collate(self, samples):
        ids = nn.utils.rnn.pad_sequence([s[0] for s in samples], batch_first=True, padding_value=PAD_ID)
        targets = torch.stack([s[1] for s in samples])
        return (ids,), targets

    def example_inputs(self, arch: TextClfArch, batch_size: int, generator: torch.Generator | None = None):
        length = min(64, arch.max_length)
        ids = torch.randint(3, arch.vocab_size, (batch_size, length), generator=generator)
        ids[:, 0] = CLS_ID
        ids[1:, length // 2:] = PAD_ID  # mixed lengths so the padding mask is exercised
        return (ids,)

    def preprocessing(self, arch: TextClfArch, splits: Splits) -> dict:
        return {"pad_id": PAD_ID, "cls_id": CLS_ID, "max_length": arch.max_length}
