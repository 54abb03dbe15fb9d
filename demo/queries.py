"""Step 4 of the demo: the same held-out inputs through PyTorch, Triton over HTTP and Triton over gRPC.

Images go to ``digits`` as float arrays; messages go to ``textclf_text`` as raw strings (the server tokenizes them
with the training run's tokenizer). PyTorch's answers come from the very weights the builders exported, so any
difference is a serving bug: the demo stops with an error naming the example.
"""
from __future__ import annotations

import torch

from common.errors import UserError
from demo.config import ROOT, DemoConfig


def _digits_examples(exported, n: int):
    test = exported.load_splits().test
    images = torch.stack([test[i][0] for i in range(n)])
    truth = [exported.manifest.labels[int(test[i][1])] for i in range(n)]
    with torch.inference_mode():
        reference = exported.model(images)[1].argmax(dim=-1).tolist()
    return "digits", images.numpy(), [f"image #{i}" for i in range(n)], truth, [exported.manifest.labels[r] for r in reference]


def _text_examples(exported, n: int):
    from tokenizers import Tokenizer

    examples = exported.spec.held_out_messages(exported.data, n)
    tokenizer = Tokenizer.from_file(str(exported.run_dir / "tokenizer.json"))
    reference = []
    with torch.inference_mode():
        for enc in tokenizer.encode_batch([e.text for e in examples]):
            probabilities = exported.model(torch.tensor([enc.ids], dtype=torch.int64))[1]
            reference.append(exported.manifest.labels[int(probabilities.argmax(dim=-1))])
    texts = [e.text for e in examples]
    truth = [exported.manifest.labels[e.label] for e in examples]
    shown = [t if len(t) <= 48 else t[:45] + "..." for t in texts]
    return "textclf_text", texts, shown, truth, reference


def query_models(config: DemoConfig, server) -> dict:
    from clients import TritonClient
    from training.export import load_exported

    results = {}
    for step in config.train:
        exported = load_exported(ROOT / step.run_dir)
        if exported.manifest.model == "digits":
            triton_model, inputs, shown, truth, reference = _digits_examples(exported, config.queries)
        elif exported.manifest.model == "textclf":
            triton_model, inputs, shown, truth, reference = _text_examples(exported, config.queries)
        else:
            continue
        answers = {}
        for protocol, url in (("http", server.http_url), ("grpc", server.grpc_url)):
            with TritonClient(url, protocol=protocol) as client:
                answers[protocol] = list(client.infer(triton_model, inputs).labels)
        print(f"\n{triton_model} ({len(shown)} held-out examples)")
        print(f"  {'input':50s} {'true':>10s} {'PyTorch':>10s} {'HTTP':>10s} {'gRPC':>10s}")
        rows = []
        for i, label in enumerate(shown):
            row = {"input": label, "true": truth[i], "pytorch": reference[i], "http": answers["http"][i],
                   "grpc": answers["grpc"][i]}
            rows.append(row)
            print(f"  {label:50s} {row['true']:>10s} {row['pytorch']:>10s} {row['http']:>10s} {row['grpc']:>10s}")
        mismatches = [r for r in rows if not (r["pytorch"] == r["http"] == r["grpc"])]
        if mismatches:
            first = mismatches[0]
            raise UserError(f"{triton_model}: Triton disagrees with PyTorch on {len(mismatches)} of {len(rows)} examples, "
                            f"e.g. {first['input']!r}: PyTorch {first['pytorch']}, HTTP {first['http']}, gRPC {first['grpc']}")
        print(f"  HTTP and gRPC agree with PyTorch on all {len(rows)} examples")
        results[triton_model] = {"rows": rows, "agree": True}
    return results
