from builders.cli import entry

entry()
