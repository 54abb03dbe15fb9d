"""Configuration: invalid values are refused before any work starts, with one line naming the field."""
from __future__ import annotations

import pytest

from common.errors import UserError
from tests.training.conftest import run_training
from training.cli import build_parser, load
from training.config import identity, identity_dict, resolve


def parse(*argv: str):
    return load(build_parser().parse_args(list(argv)))


@pytest.mark.parametrize("argv, expected", [
    (["--lr", "-0.1"], "optimizer.lr: Input should be greater than 0"),
    (["--lr", "0"], "optimizer.lr: Input should be greater than 0"),
    (["--batch-size", "0"], "batch_size: Input should be greater than or equal to 1"),
    (["--epochs", "0"], "epochs: Input should be greater than or equal to 1"),
    (["--accumulate", "0"], "accumulate: Input should be greater than or equal to 1"),
    (["--grad-clip", "-1"], "grad_clip: Input should be greater than or equal to 0"),
    (["--keep-last", "0"], "checkpoint.keep_last"),
    (["--metrics-port", "70000"], "metrics.port"),
    (["--set", "arch.d_model=100", "--set", "arch.heads=3"], "d_model (100) must be divisible by heads (3)"),
    (["--set", "arch.no_such_field=1"], "arch: no_such_field: Extra inputs are not permitted"),
    (["--set", "optimiser.lr=1"], "optimiser: Extra inputs are not permitted"),
])
def test_invalid_values_are_rejected_with_the_field_name(argv, expected):
    model = "textclf" if any("arch." in a for a in argv) else "digits"
    with pytest.raises(UserError) as err:
        parse("--model", model, "--run-dir", "unused", *argv)
    assert expected in str(err.value)


def test_unknown_model_lists_the_known_ones():
    with pytest.raises(UserError, match=r"unknown model 'resnet'; expected one of: digits, hf_classifier, textclf"):
        parse("--model", "resnet", "--run-dir", "unused")


def test_missing_model_is_an_error():
    with pytest.raises(UserError, match="no model given"):
        parse("--run-dir", "unused")


def test_file_then_flags_precedence(tmp_path):
    path = tmp_path / "run.toml"
    path.write_text('model = "digits"\nepochs = 7\nbatch_size = 16\n[optimizer]\nlr = 0.01\n[data]\nsplit_seed = 2\n')
    config = parse("--config", str(path), "--run-dir", "unused", "--batch-size", "32", "--grad-clip", "0")
    assert (config.epochs, config.batch_size, config.optimizer.lr, config.grad_clip) == (7, 32, 0.01, 0.0)
    assert config.data_config().split_seed == 2


def test_shipped_configs_are_valid():
    from pathlib import Path

    shipped = sorted((Path(__file__).resolve().parents[2] / "training" / "configs").glob("*.toml"))
    assert shipped, "training/configs/*.toml should ship sample configurations"
    for path in shipped:
        assert resolve(path, {}).model in ("digits", "textclf")


def test_identity_ignores_operational_settings_only():
    base = resolve(None, {"model": "digits"})
    assert identity(base) == identity(resolve(None, {"model": "digits", "epochs": 30, "metrics.port": 9402,
                                                    "checkpoint.keep_last": 9, "early_stopping.patience": 0}))
    assert identity(base) != identity(resolve(None, {"model": "digits", "optimizer.lr": 0.01}))
    assert identity(base) != identity(resolve(None, {"model": "digits", "seed": 1}))
    assert identity_dict(base)["arch"]["hidden"] == 128  # model defaults are part of the identity


def test_cli_rejects_before_any_work(tmp_path):
    run_dir = tmp_path / "never-created"
    proc = run_training("--model", "digits", "--run-dir", str(run_dir), "--lr", "-1", "--batch-size", "0", check=False)
    assert proc.returncode == 2
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in proc.stderr
    assert "optimizer.lr" in lines[0] and "batch_size" in lines[0]
    assert not run_dir.exists()


def test_help_explains_every_option():
    parser = build_parser()
    text = parser.format_help()
    for action in parser._actions:
        for flag in action.option_strings:
            assert flag in text
        if action.option_strings and action.dest != "help":
            assert action.help and len(action.help) > 15, f"{action.option_strings} needs an explanation"
    for topic in ("torchrun", "--nnodes", "resume", "sidecar", "model.safetensors"):
        assert topic in text
