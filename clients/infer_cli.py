"""Send inputs to a served model and print its predictions.

Examples::

    python -m clients infer --model digits --input images.npy
    python -m clients infer --model digits --input images.json --protocol grpc --json
    python -m clients infer --model textclf_text --text "my parcel never arrived" --text "refund please"
    python -m clients infer --model textclf_text --text-file tickets.txt --batch-size 8
    python -m clients infer --model textclf --text "where is my order" --tokenizer runs/textclf/tokenizer.json

Inputs are checked against the model before sending; a wrong name, datatype, shape, a batch above the model's
maximum or an empty request stops with one line naming what was sent and what the model expects. A server that is
down is retried within --budget, then named in the error. Exit status: 0 on success, 2 on any error.
"""
from __future__ import annotations

import argparse
import sys
from typing import Any, Sequence

import numpy as np

from common import cli
from common.errors import UserError, run_cli

from clients.cli_options import add_connection_arguments, client_config, emit_json
from clients.input_files import read_inputs, read_texts, rows, split


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="model name as served (e.g. digits, textclf_text)")
    parser.add_argument("--version", help="model version (default: the server's choice, normally the latest)")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--input", help="inputs file: .npy (one array), .npz (named arrays) or .json (nested list, "
                                        "{input name: list}, or a list of texts)")
    source.add_argument("--text", action="append", help="a text to classify (repeatable); for string-input models, "
                                                        "or token models with --tokenizer")
    source.add_argument("--text-file", help="texts to classify: .txt with one per line, or a .json list of strings")
    parser.add_argument("--tokenizer", help="tokenizer.json to turn texts into input_ids for a model that takes tokens")
    parser.add_argument("--output-name", action="append", dest="outputs",
                        help="request only this output (repeatable; default: all outputs)")
    parser.add_argument("--batch-size", type=int,
                        help="split the inputs into requests of at most this many rows (default: one request)")
    parser.add_argument("--shared-memory", choices=["none", "system", "cuda"],
                        help="pass tensors through shared memory (the server must be on this host; default none)")
    parser.add_argument("--output", help="write the JSON result to this file (atomically) instead of printing it")
    add_connection_arguments(parser)


def _gather_inputs(args: argparse.Namespace) -> Any:
    if args.text is not None:
        return list(args.text)
    if args.text_file:
        texts = read_texts(args.text_file)
        if not texts:
            raise UserError(f"empty request: {args.text_file} holds no text (expected one text per line)")
        return texts
    return read_inputs(args.input)


def _table(results: list[Any]) -> str:
    first = results[0]
    lines = [f"{first.model} over {first.protocol} in {sum(r.latency_s for r in results) * 1000:.1f} ms "
             f"({len(results)} request{'s' if len(results) != 1 else ''}, "
             f"{sum(r.attempts for r in results)} attempt{'s' if sum(r.attempts for r in results) != 1 else ''})"]
    if first.labels is not None:
        lines.append(f"{'row':>5}  {'label':<24} score")
        row = 0
        for result in results:
            for i, label in enumerate(result.labels):
                score = f"{float(result.scores[i]):.4f}" if result.scores is not None else "-"
                lines.append(f"{row:>5}  {label:<24} {score}")
                row += 1
        return "\n".join(lines)
    for name in first.outputs:
        merged = np.concatenate([r.outputs[name] for r in results]) if len(results) > 1 else first.outputs[name]
        lines.append(f"{name} {merged.dtype} {list(merged.shape)}:")
        lines.append(np.array2string(merged, precision=4, threshold=200, max_line_width=110))
    return "\n".join(lines)


def _merged_json(results: list[Any]) -> dict[str, Any]:
    if len(results) == 1:
        return results[0].to_json()
    parts = [r.to_json() for r in results]
    merged = dict(parts[0])
    merged["latency_ms"] = round(sum(p["latency_ms"] for p in parts), 3)
    merged["attempts"] = sum(p["attempts"] for p in parts)
    merged["requests"] = len(parts)
    merged["predictions"] = [row for p in parts for row in p["predictions"]]
    merged["outputs"] = {name: [v for p in parts for v in p["outputs"][name]] for name in parts[0]["outputs"]}
    return merged


def main(argv: Sequence[str] | None = None, args: argparse.Namespace | None = None) -> int:
    args = cli.command_args("python -m clients infer", __doc__, add_arguments, argv, args)
    if args.batch_size is not None and args.batch_size < 1:
        raise UserError(f"--batch-size must be at least 1 (got {args.batch_size})")
    config = client_config(args, shared_memory=args.shared_memory, tokenizer=args.tokenizer)
    inputs = _gather_inputs(args)

    from clients.client import TritonClient

    with TritonClient(config=config) as client:
        chunks = split(inputs, args.batch_size) if args.batch_size and rows(inputs) > args.batch_size else [inputs]
        results = []
        progress = None
        if len(chunks) > 4:
            from tqdm import tqdm

            progress = tqdm(total=len(chunks), unit="req", file=sys.stderr, desc=f"infer {args.model}")
        for chunk in chunks:
            results.append(client.infer(args.model, chunk, version=args.version, outputs=args.outputs))
            if progress is not None:
                progress.update(1)
        if progress is not None:
            progress.close()
    if args.json or args.output:
        data = _merged_json(results)
        data["url"] = client.url
        emit_json(data, args.output)
    else:
        print(_table(results))
    return 0


if __name__ == "__main__":
    run_cli(main)
