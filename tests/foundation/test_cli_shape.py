"""Every component's command line goes through common/cli.py: ``python -m X --help`` and each ``X COMMAND --help``
exit 0 from the shared parser, every ``main(argv, args)`` command module also runs on its own, and builders and
training (which used to) no longer hand-roll an argparse tree beside it."""
from __future__ import annotations

import argparse
import ast
import importlib
import subprocess
import sys
from pathlib import Path

import pytest

from common import cli

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ["builders", "clients", "monitoring", "benchmarks", "deploy"]  # python -m X COMMAND [options]
SINGLE_COMMAND = ["training"]  # python -m training [options]


def _exit_code(function, *args, **kwargs) -> int:
    with pytest.raises(SystemExit) as exited:
        function(*args, **kwargs)
    return exited.value.code


@pytest.mark.parametrize("package", PACKAGES + SINGLE_COMMAND)
def test_python_m_help_exits_0(package):
    result = subprocess.run([sys.executable, "-m", package, "--help"], cwd=ROOT, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"usage: python -m {package}"), result.stdout[:200]


@pytest.mark.parametrize("package", PACKAGES)
def test_every_command_is_built_by_the_shared_parser_and_documents_its_options(package, capsys):
    main = importlib.import_module(f"{package}.__main__")
    parser = main.build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    assert list(sub.choices) == [name for name, _module, _help in main.COMMANDS]
    for name, module_name, _help in main.COMMANDS:
        module = importlib.import_module(module_name)
        assert sub.choices[name].get_default("_module") is module, f"{package} {name} is not dispatched by common.cli"
        assert _exit_code(main.main, [name, "--help"]) == 0, f"{package} {name} --help"
        assert capsys.readouterr().out.startswith(f"usage: python -m {package} {name}")
        for action in sub.choices[name]._actions:
            if action.option_strings and action.dest != "help":
                assert action.help, f"{package} {name} {action.option_strings[0]} has no help text"
        if hasattr(module, "main"):  # main(argv=None, args=None) modules also run on their own, via cli.command_args
            assert _exit_code(module.main, ["--help"]) == 0, f"{module_name}.main(['--help'])"
            assert capsys.readouterr().out.startswith(f"usage: python -m {package} {name}")
        else:  # benchmarks dispatch to run(args): parsed only by the package's parser
            assert callable(module.run), f"{module_name} has neither main nor run"
    assert _exit_code(main.main, []) == 2, "a missing command is a usage error"
    assert "COMMAND" in capsys.readouterr().err


def test_training_is_one_command_through_the_shared_parser(capsys):
    from training import cli as training_cli

    parser = training_cli.build_parser()
    reference = cli.command_parser("python -m training", training_cli.DESCRIPTION, training_cli.add_arguments,
                                   training_cli.EPILOG)
    assert parser.format_help() == reference.format_help()
    assert not any(isinstance(a, argparse._SubParsersAction) for a in parser._actions), "no subcommands"
    args = parser.parse_args(["--model", "digits", "--run-dir", "runs/x", "--lora-rank", "4", "--set", "a=1"])
    assert (args.model, args.run_dir, args.lora_rank, args.set) == ("digits", "runs/x", 4, ["a=1"])
    assert _exit_code(training_cli.main, ["--model", "digits"]) == 2  # --run-dir is required, as before
    assert "--run-dir" in capsys.readouterr().err


def _argparse_constructions(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Call):
            name = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
            if name in ("ArgumentParser", "add_subparsers"):
                found.append(f"{path.relative_to(ROOT)}:{node.lineno} {name}")
    return found


@pytest.mark.parametrize("package", ["builders", "training", "clients", "monitoring", "benchmarks", "deploy", "demo"])
def test_no_component_builds_its_own_argparse_tree(package):
    found = [hit for path in sorted((ROOT / package).rglob("*.py")) for hit in _argparse_constructions(path)]
    assert found == [], f"use common.cli (build_parser / command_parser / command_args) instead: {found}"
