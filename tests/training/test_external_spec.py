"""A model defined outside the source tree trains through the same trainer: by ``--spec FILE.py:CLASS`` or by an
installed distribution's entry point in the group ``inference_platform.models``, without editing ``training/``."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from tests.training.conftest import REPO

SPEC_SOURCE = textwrap.dedent('''
    """Three Gaussian blobs in 2-D, a two-layer MLP: a third model that lives outside the platform's package."""
    import torch
    from pydantic import Field
    from torch import nn
    from torch.utils.data import TensorDataset

    from common.manifest import TensorSpec
    from training.models import ModelSpec, Splits, StrictConfig


    class Arch(StrictConfig):
        hidden: int = Field(16, gt=0)


    class Data(StrictConfig):
        size: int = 300
        seed: int = 7


    class Net(nn.Module):
        def __init__(self, hidden):
            super().__init__()
            self.layers = nn.Sequential(nn.Linear(2, hidden), nn.ReLU(), nn.Linear(hidden, 3))

        def forward(self, points):
            logits = self.layers(points)
            return logits, torch.softmax(logits, dim=-1)


    class CLASSNAME(ModelSpec):
        name = "MODELNAME"
        description = "three 2-D Gaussian blobs (defined outside the package)"
        Arch = Arch
        Data = Data

        def inputs(self, arch):
            return [TensorSpec(name="points", dtype="float32", shape=("batch", 2))]

        def outputs(self, arch):
            return [TensorSpec(name="logits", dtype="float32", shape=("batch", 3)),
                    TensorSpec(name="probabilities", dtype="float32", shape=("batch", 3))]

        def build(self, arch):
            return Net(arch.hidden)

        def load_data(self, data, arch):
            g = torch.Generator().manual_seed(data.seed)
            labels = torch.arange(data.size) % 3
            centres = torch.tensor([[0.0, 3.0], [3.0, -2.0], [-3.0, -2.0]])
            points = centres[labels] + torch.randn(data.size, 2, generator=g)
            cut1, cut2 = int(0.7 * data.size), int(0.85 * data.size)
            part = lambda a, b: TensorDataset(points[a:b], labels[a:b])
            return Splits(part(0, cut1), part(cut1, cut2), part(cut2, data.size), ["north", "east", "west"],
                          f"blobs-{data.size}-{data.seed}", {})

        def collate(self, samples):
            return (torch.stack([s[0] for s in samples]),), torch.stack([s[1] for s in samples])

        def example_inputs(self, arch, batch_size, generator=None):
            return (torch.randn(batch_size, 2, generator=generator),)
''')

QUICK = ["--threads", "1", "--progress", "off", "--epochs", "3", "--batch-size", "32", "--lr", "0.03"]


def write_spec(folder, module, class_name, model_name):
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{module}.py"
    path.write_text(SPEC_SOURCE.replace("CLASSNAME", class_name).replace("MODELNAME", model_name))
    return path


def run(*args, extra_path=None):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO)] + ([str(extra_path)] if extra_path else [])))
    return subprocess.run([sys.executable, "-m", "training", *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=300)


def check_run(run_dir, model_name):
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["model"] == model_name and manifest["labels"] == ["north", "east", "west"]
    assert manifest["metrics"]["test_accuracy"] > 0.9  # well-separated blobs: a trained MLP gets them right
    assert [t["name"] for t in manifest["inputs"]] == ["points"]
    assert len((run_dir / "metrics.jsonl").read_text().splitlines()) == 3
    return manifest


@pytest.mark.slow
def test_spec_file_outside_the_tree_trains_resumes_exports_builds_and_serves(tmp_path):
    spec = write_spec(tmp_path / "elsewhere", "blobs_spec", "Blobs", "blobs")
    run_dir = tmp_path / "run"
    first = run("--spec", f"{spec}:Blobs", "--run-dir", str(run_dir), *QUICK)
    assert first.returncode == 0, first.stderr[-3000:]
    manifest = check_run(run_dir, "blobs")
    assert manifest["training"]["config"]["spec"] == f"{spec.resolve()}:Blobs"
    again = run("--spec", f"{spec}:Blobs", "--run-dir", str(run_dir), *QUICK)  # finished run: a no-op resume
    assert again.returncode == 0 and "resuming from" in again.stderr and "epoch 1/" not in again.stderr

    # the exported run is loadable in another process that never saw --spec (the manifest names the file)
    probe = subprocess.run([sys.executable, "-c", "import sys; from training.export import load_exported; "
                            "e = load_exported(sys.argv[1]); print(type(e.model).__name__, e.manifest.model)",
                            str(run_dir)], cwd=REPO, env=dict(os.environ, PYTHONPATH=str(REPO)),
                           capture_output=True, text=True, timeout=120)
    assert probe.returncode == 0 and probe.stdout.split() == ["Net", "blobs"], probe.stderr[-2000:]

    # ... and the builders build, gate and publish it, and the real Triton serves what PyTorch computes
    assert manifest["factory"] == f"{spec.resolve()}:Blobs"
    repository = tmp_path / "model_repository"
    build = subprocess.run([sys.executable, "-m", "builders", "build", "--run-dir", str(run_dir), "--repository",
                            str(repository), "--work-dir", str(tmp_path / "builds")], cwd=REPO,
                           env=dict(os.environ, PYTHONPATH=str(REPO)), capture_output=True, text=True, timeout=600)
    assert build.returncode == 0, build.stdout[-3000:] + build.stderr[-3000:]
    assert (repository / "blobs" / "1" / "model.onnx").is_file()
    _serve_and_compare(repository, run_dir)


def _serve_and_compare(repository, run_dir):
    import numpy as np
    import tritonclient.http as httpclient

    from clients.serve import ServerConfig, TritonServer
    from common.net import free_port
    from training.export import load_exported

    exported = load_exported(run_dir)
    points = np.stack([exported.load_splits().test[i][0].numpy() for i in range(16)])
    expected = exported.model(__import__("torch").from_numpy(points))[1].detach().numpy()
    config = ServerConfig(repository=repository, http_port=free_port(), grpc_port=free_port(),
                          metrics_port=free_port(), log_file=run_dir.parent / "triton.log", exit_timeout_s=1)
    with TritonServer(config) as server:
        client = httpclient.InferenceServerClient(server.http_url)
        try:
            tensor = httpclient.InferInput("points", list(points.shape), "FP32")
            tensor.set_data_from_numpy(points)
            got = client.infer("blobs", [tensor]).as_numpy("probabilities")
        finally:
            client.close()
    np.testing.assert_allclose(got, expected, atol=1e-5)


@pytest.mark.slow
def test_entry_point_of_an_installed_distribution_registers_a_model(tmp_path):
    site = tmp_path / "site"
    write_spec(site, "blobs_plugin", "Rings", "rings")
    dist_info = site / "blobs_plugin-0.1.dist-info"
    dist_info.mkdir()
    (dist_info / "METADATA").write_text("Metadata-Version: 2.1\nName: blobs-plugin\nVersion: 0.1\n")
    (dist_info / "entry_points.txt").write_text("[inference_platform.models]\nrings = blobs_plugin:Rings\n")
    listed = run("--help", extra_path=site)
    assert listed.returncode == 0 and "rings" in listed.stdout
    run_dir = tmp_path / "run"
    done = run("--model", "rings", "--run-dir", str(run_dir), *QUICK, extra_path=site)
    assert done.returncode == 0, done.stderr[-3000:]
    check_run(run_dir, "rings")


@pytest.mark.parametrize("reference, expected", [
    ("{tmp}/missing.py:Blobs", "is not a Python file"),
    ("{tmp}/blobs_spec.py", "expected PATH/TO/FILE.py:ClassName"),
    ("{tmp}/blobs_spec.py:Nope", "defines no 'Nope' (model specs there: Blobs)"),
    ("{tmp}/broken.py:Blobs", "does not import: NameError"),
])
def test_bad_spec_references_are_one_line_errors(tmp_path, reference, expected):
    write_spec(tmp_path, "blobs_spec", "Blobs", "blobs")
    (tmp_path / "broken.py").write_text("undefined_name\n")
    result = run("--spec", reference.format(tmp=tmp_path), "--run-dir", str(tmp_path / "run"), *QUICK)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: --spec") and expected in lines[0], result.stderr
    assert not (tmp_path / "run").exists()
