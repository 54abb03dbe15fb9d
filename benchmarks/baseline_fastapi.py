"""The baseline a team would otherwise write: FastAPI + uvicorn calling PyTorch eager on every request.

Shipped only so that ``python -m benchmarks compare`` can put our Triton path side by side with it on the same model
and inputs. It is written the way such services usually are (a sync endpoint, JSON in and out, one model in the
process, no batching) and not handicapped: inference runs under ``torch.inference_mode`` on a model in eval mode.

Run: ``python -m benchmarks.baseline_fastapi --run-dir runs/textclf --port 8100``.
"""
from __future__ import annotations

import sys

import torch
import uvicorn
from fastapi import FastAPI, HTTPException
from pydantic import BaseModel

from common import cli
from training.export import load_exported


def create_app(run_dir: str) -> FastAPI:
    exported = load_exported(run_dir)
    model = exported.model.eval()
    input_name = exported.manifest.inputs[0].name
    dtype = torch.int64 if exported.manifest.inputs[0].dtype == "int64" else torch.float32
    labels = exported.manifest.labels
    app = FastAPI(title=f"{exported.manifest.model} baseline")

    class Prediction(BaseModel):
        labels: list[str]
        probabilities: list[list[float]]

    @app.post("/predict", response_model=Prediction)
    def predict(payload: dict) -> Prediction:
        if input_name not in payload:
            raise HTTPException(status_code=422, detail=f"expected a JSON object with {input_name!r}")
        try:
            tensor = torch.tensor(payload[input_name], dtype=dtype)
        except (TypeError, ValueError) as exc:
            raise HTTPException(status_code=422, detail=f"{input_name}: {exc}") from None
        with torch.inference_mode():
            _logits, probabilities = model(tensor)
        return Prediction(labels=[labels[i] for i in probabilities.argmax(dim=-1).tolist()],
                          probabilities=probabilities.tolist())

    @app.get("/health")
    def health() -> dict:
        return {"status": "ok"}

    return app


def main(argv: list[str] | None = None) -> int:
    parser = cli.command_parser("python -m benchmarks.baseline_fastapi", __doc__)
    parser.add_argument("--run-dir", required=True, help="training run directory (model.safetensors + manifest.json)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8100)
    args = parser.parse_args(argv)
    uvicorn.run(create_app(args.run_dir), host=args.host, port=args.port, log_level="warning", access_log=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
