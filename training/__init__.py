"""Training: resumable, seeded, observable runs that end in ``model.safetensors`` + ``manifest.json``.

``python -m training --help`` for the command line; :mod:`training.models` for the model registry.
"""
