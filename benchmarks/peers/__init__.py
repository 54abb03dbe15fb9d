"""Servers a user would pick instead of ours, run by ``python -m benchmarks compare --model minilm``.

Each peer runs in its own process (and, where its dependencies clash with ours, its own virtual environment), so its
CPU use is measured apart from the load generator's and its pins never touch this project's environment.
"""
