"""``python -m training`` (also ``torchrun ... -m training``): see :mod:`training.cli`."""
from common.errors import run_cli
from training.cli import main

if __name__ == "__main__":
    run_cli(main)
