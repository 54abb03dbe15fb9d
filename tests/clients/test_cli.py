"""``python -m clients``: documented commands, predictions as JSON, and one-line errors with a non-zero exit."""
from __future__ import annotations

import argparse
import json

import numpy as np
import pytest

from clients import TritonClient
from clients.__main__ import COMMANDS, build_parser, main as clients_main
from common.errors import run_cli
from common.net import free_port
from tests.clients.conftest import run_clients_cli, url_for

FEATURES = np.random.default_rng(3).normal(size=(4, 4)).astype(np.float32)


def cli(capsys, *argv: str) -> tuple[int, str, str]:
    """Run the command line in this process (as ``python -m clients`` does); return exit code, stdout, stderr."""
    with pytest.raises(SystemExit) as exited:
        run_cli(clients_main, list(argv))
    out, err = capsys.readouterr()
    return exited.value.code, out, err


def test_help_documents_every_command_and_option():
    result = run_clients_cli("--help")
    assert result.returncode == 0
    for name, _module, help_text in COMMANDS:
        assert name in result.stdout and help_text.split()[0] in result.stdout
    parser = build_parser()
    subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    assert set(subparsers.choices) == {name for name, _m, _h in COMMANDS} >= {"serve", "infer", "health", "models"}
    for name, command in subparsers.choices.items():
        text = command.format_help()
        for action in command._actions:
            if action.option_strings and action.dest != "help":
                assert action.help, f"{name} {action.option_strings[0]} has no help text"
                assert action.option_strings[0] in text


def test_infer_prints_the_same_predictions_as_the_library(triton, tmp_path, protocol):
    path = tmp_path / "features.npy"
    np.save(path, FEATURES)
    url = url_for(triton, protocol)
    result = run_clients_cli("infer", "--model", "toy", "--input", str(path), "--protocol", protocol, "--url", url,
                             "--json")
    assert result.returncode == 0, result.stderr
    printed = json.loads(result.stdout)
    with TritonClient(url, protocol) as client:
        expected = client.infer("toy", FEATURES)
    assert [p["label"] for p in printed["predictions"]] == expected.labels
    np.testing.assert_allclose(printed["outputs"]["probabilities"], expected.outputs["probabilities"], rtol=1e-6)


def test_infer_texts_json_file_and_batching(triton, tmp_path, capsys):
    texts = tmp_path / "texts.txt"
    texts.write_text("is it here?\nno\n\nwhy?\nok\nfine\nreally?\n")
    code, out, err = cli(capsys, "infer", "--model", "text", "--text-file", str(texts), "--url", triton.http_url,
                         "--batch-size", "4", "--json")
    assert code == 0, err
    data = json.loads(out)
    assert [p["label"] for p in data["predictions"]] == ["question", "statement", "question", "statement",
                                                          "statement", "question"]
    assert data["requests"] == 2
    code, out, _ = cli(capsys, "infer", "--model", "text", "--text", "hello?", "--text", "bye",
                       "--protocol", "grpc", "--url", triton.grpc_url)
    assert code == 0 and "question" in out and "statement" in out
    rows = tmp_path / "rows.json"
    rows.write_text(json.dumps(FEATURES.tolist()))
    code, out, _ = cli(capsys, "infer", "--model", "toy", "--input", str(rows), "--url", triton.http_url,
                       "--shared-memory", "system", "--output", str(tmp_path / "out.json"))
    assert code == 0
    assert len(json.loads((tmp_path / "out.json").read_text())["predictions"]) == 4


def test_bad_input_exits_2_with_one_line_naming_what_is_wrong(triton, tmp_path, capsys):
    np.save(tmp_path / "f64.npy", FEATURES.astype(np.float64))
    np.save(tmp_path / "big.npy", np.zeros((9, 4), np.float32))
    np.save(tmp_path / "ok.npy", FEATURES)
    np.save(tmp_path / "scalar.npy", np.float32(1.0))
    (tmp_path / "empty.txt").write_text("\n\n")
    (tmp_path / "named.json").write_text(json.dumps({"feature": FEATURES.tolist()}))
    url = triton.http_url
    cases = [
        (["--model", "nope", "--input", str(tmp_path / "ok.npy")],
         f"unknown model 'nope' at http://{url}; it serves: guard, slow, text, toy"),
        (["--model", "toy", "--version", "9", "--input", str(tmp_path / "ok.npy")], "model 'toy' has no version 9"),
        (["--model", "toy", "--input", str(tmp_path / "f64.npy")],
         "input 'features' has datatype FP64 but the model expects FP32 (sent features FP64 [4, 4]"),
        (["--model", "toy", "--input", str(tmp_path / "big.npy")],
         "batch of 9 rows in input 'features' is above the model's max_batch_size 8"),
        (["--model", "toy", "--input", str(tmp_path / "named.json")],
         "has no input named 'feature' (sent feature FP64 [4, 4]); it expects: features FP32 [batch<=8, 4]"),
        (["--model", "text", "--text-file", str(tmp_path / "empty.txt")], "empty request"),
        (["--model", "toy", "--input", str(tmp_path / "scalar.npy"), "--batch-size", "2"],
         "input 'features' has shape [] but the model expects [batch<=8, 4]"),
        (["--model", "toy", "--input", str(tmp_path / "missing.npy")], "does not exist"),
        (["--model", "toy", "--input", str(tmp_path / "ok.npy"), "--url", "no-port"], "is not HOST:PORT"),
    ]
    for argv, message in cases:
        code, out, err = cli(capsys, "infer", "--url", url, *argv)
        assert code == 2, (argv, out, err)
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], (argv, err)


@pytest.mark.slow
def test_a_server_that_is_down_is_named_and_no_traceback_is_shown(tmp_path):
    np.save(tmp_path / "ok.npy", FEATURES)
    url = f"127.0.0.1:{free_port()}"
    result = run_clients_cli("infer", "--model", "toy", "--input", str(tmp_path / "ok.npy"), "--protocol", "grpc",
                             "--url", url, "--budget", "1.5")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert f"server at grpc://{url} unavailable" in result.stderr and "budget 1.5 s" in result.stderr
    health = run_clients_cli("health", "--url", url, "--timeout", "1")
    assert health.returncode == 2 and f"http://{url} not ready within 1 s (server not live)" in health.stderr


def test_health_and_models(triton, capsys):
    code, out, _ = cli(capsys, "health", "--url", triton.http_url, "--timeout", "5", "--model", "toy")
    assert code == 0 and "live, ready, model 'toy' ready" in out
    code, out, _ = cli(capsys, "health", "--protocol", "grpc", "--url", triton.grpc_url, "--json")
    assert code == 0 and json.loads(out)["ready"] is True
    code, out, err = cli(capsys, "health", "--url", triton.http_url, "--timeout", "0.5", "--model", "nope")
    assert code == 2 and "model 'nope' at http://" in err
    code, out, _ = cli(capsys, "models", "--url", triton.http_url, "--details", "--json")
    listed = {m["name"]: m for m in json.loads(out)}
    assert set(listed) == {"guard", "slow", "text", "toy"}
    assert listed["toy"]["info"]["labels"] == ["cat", "dog", "bird"]
