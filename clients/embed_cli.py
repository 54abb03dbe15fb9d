"""Embed texts with a served embedding model and print each vector's norm and first values, or save the vectors.

Examples::

    python -m clients embed --model minilm_text --text "my parcel never arrived"
    python -m clients embed --model minilm_text --text "refund please" --text "where is my order" --protocol grpc
    python -m clients embed --model minilm_text --text-file tickets.txt --output vectors.npy
    python -m clients embed --model minilm --tokenizer DIR/tokenizer.json --text "pre-tokenized by the client"
    python -m clients embed --model minilm_text --text "hello" --json      # the full vectors as JSON

``--model`` is a text ensemble (raw text in, the server tokenizes) or an encoder that takes token ids, for which the
client tokenizes with ``--tokenizer``. Many texts are sent in requests of at most ``--batch-size`` (and never more
than the model takes at once). ``--output FILE.npy`` writes a float32 ``[texts, dims]`` array atomically, rows in
the order of the texts. Exit status: 0 on success, 2 on any error (one line naming what is wrong).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

import numpy as np

from common import cli
from common.errors import UserError, run_cli
from common.files import atomic_writer

from clients.cli_options import add_connection_arguments, client_config, emit_json
from clients.input_files import read_texts

SHOWN_VALUES = 6


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="embedding model as served (e.g. minilm_text, or minilm with "
                                                       "--tokenizer)")
    parser.add_argument("--version", help="model version (default: the server's choice, normally the latest)")
    parser.add_argument("--text", action="append", help="a text to embed (repeatable)")
    parser.add_argument("--text-file", help="texts to embed: .txt with one per line, or a .json list of strings "
                                            "(combined with --text, file texts come after)")
    parser.add_argument("--tokenizer", help="the model's tokenizer.json, for an encoder that takes token ids")
    parser.add_argument("--batch-size", type=int, help="texts per request (default: as many as the model takes)")
    parser.add_argument("--output", help="write the vectors to this .npy file (float32 [texts, dims]) instead of "
                                         "printing them")
    add_connection_arguments(parser)


def gather_texts(args: argparse.Namespace) -> list[str]:
    texts = list(args.text or [])
    if args.text_file:
        from_file = read_texts(args.text_file)
        if not from_file:
            raise UserError(f"empty request: {args.text_file} holds no text (expected one text per line)")
        texts += from_file
    if not texts:
        raise UserError("nothing to embed: give --text (repeatable) and/or --text-file")
    return texts


def table(result, texts: list[str]) -> str:
    vectors = result.embeddings
    norms = np.linalg.norm(vectors, axis=1)
    requests = result.extra.get("requests", 1)
    lines = [f"{result.model} over {result.protocol}: {len(texts)} text{'s' if len(texts) != 1 else ''} -> "
             f"{vectors.shape[1]}-dimensional vectors in {result.latency_s * 1000:.1f} ms ({requests} request"
             f"{'s' if requests != 1 else ''})",
             f"{'row':>4}  {'norm':>7}  {'first values':<{SHOWN_VALUES * 9 + 2}}  text"]
    for row, (vector, norm, text) in enumerate(zip(vectors, norms, texts)):
        values = " ".join(f"{v:+.4f}" for v in vector[:SHOWN_VALUES]) + " …"
        shown = text if len(text) <= 50 else text[:47] + "..."
        lines.append(f"{row:>4}  {norm:7.4f}  {values:<{SHOWN_VALUES * 9 + 2}}  {shown}")
    return "\n".join(lines)


def write_npy(path: str, vectors: np.ndarray) -> None:
    if Path(path).suffix.lower() != ".npy":
        raise UserError(f"--output {path}: expected a .npy file name")
    with atomic_writer(path, "wb") as fh:
        np.save(fh, np.ascontiguousarray(vectors, dtype=np.float32), allow_pickle=False)
    print(f"wrote {path} (float32 {list(vectors.shape)})", file=sys.stderr)


def main(argv: Sequence[str] | None = None, args: argparse.Namespace | None = None) -> int:
    args = cli.command_args("python -m clients embed", __doc__, add_arguments, argv, args)
    if args.batch_size is not None and args.batch_size < 1:
        raise UserError(f"--batch-size must be at least 1 (got {args.batch_size})")
    if args.output and Path(args.output).suffix.lower() != ".npy":
        raise UserError(f"--output {args.output}: expected a .npy file name")
    texts = gather_texts(args)
    config = client_config(args, tokenizer=args.tokenizer)

    from clients.client import TritonClient

    with TritonClient(config=config) as client:
        result = client.embed(args.model, texts, version=args.version, batch_size=args.batch_size)
    if args.output:
        write_npy(args.output, result.embeddings)
    if args.json:
        data = {"model": result.model, "version": result.version, "protocol": result.protocol, "url": client.url,
                "latency_ms": round(result.latency_s * 1000.0, 3), "requests": result.extra.get("requests", 1),
                "attempts": result.attempts, "dims": int(result.embeddings.shape[1]),
                "norms": [round(float(n), 6) for n in np.linalg.norm(result.embeddings, axis=1)]}
        if not args.output:
            data["embeddings"] = result.embeddings.tolist()
        emit_json(data)
    elif not args.output:
        print(table(result, texts))
    return 0


if __name__ == "__main__":
    run_cli(main)
