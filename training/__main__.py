"""``python -m training`` (also ``torchrun ... -m training``): see :mod:`training.cli`."""
from training.cli import entry

if __name__ == "__main__":
    entry()
