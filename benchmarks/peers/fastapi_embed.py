"""The embedding service a team would write first: FastAPI + uvicorn around ``SentenceTransformer.encode``.

Shipped only so that ``python -m benchmarks compare --model minilm`` can put our Triton path beside it on the same
model and sentences. It is written the way such services usually are, and not handicapped: one model loaded at
start-up, a sync endpoint (FastAPI runs it in its thread pool), pydantic request/response models, JSON in and out,
``encode`` with ``normalize_embeddings=True`` under torch's default threading, no batching across requests.

Run: ``python -m benchmarks.peers.fastapi_embed --model-dir DIR --port 8100``; ``POST /embed {"sentences": [...]}``
answers ``{"embeddings": [[...], ...]}``.
"""
from __future__ import annotations

import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import uvicorn  # noqa: E402
from fastapi import FastAPI, HTTPException  # noqa: E402
from pydantic import BaseModel  # noqa: E402

from common import cli  # noqa: E402


class EmbedRequest(BaseModel):
    sentences: list[str]


class EmbedResponse(BaseModel):
    embeddings: list[list[float]]


def create_app(model_dir: str) -> FastAPI:
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(model_dir, device="cpu", local_files_only=True)
    app = FastAPI(title="sentence-transformers embeddings")

    @app.post("/embed", response_model=EmbedResponse)
    def embed(request: EmbedRequest) -> EmbedResponse:
        if not request.sentences:
            raise HTTPException(status_code=422, detail="expected at least one sentence")
        vectors = model.encode(request.sentences, normalize_embeddings=True, convert_to_numpy=True)
        return EmbedResponse(embeddings=vectors.tolist())

    @app.get("/health")
    def health() -> dict:
        return {"status": "ok"}

    return app


def main(argv: list[str] | None = None) -> int:
    parser = cli.command_parser("python -m benchmarks.peers.fastapi_embed", __doc__)
    parser.add_argument("--model-dir", required=True, help="sentence-transformers model folder")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8100)
    args = parser.parse_args(argv)
    uvicorn.run(create_app(args.model_dir), host=args.host, port=args.port, log_level="warning", access_log=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
