"""Pieces every component shares: atomic file writes, typed configuration loading, the training→builders manifest,
one-line user errors for the command lines, and where the Triton binary that ships in the nvidia-pytriton wheel lives.

Modules here import only the standard library at import time (``bootstrap`` runs before any dependency exists).
"""
