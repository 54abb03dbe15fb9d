"""Which ONNX Runtime build is installed, and whether it is the only one.

The CPU package ``onnxruntime`` and the GPU package ``onnxruntime-gpu`` (and the other builds: openvino, directml, …)
install the same ``onnxruntime`` Python package. Since onnxruntime-gpu 1.20 two of them in one environment overwrite
each other's files, and whichever was installed last wins: the CUDA provider can disappear without an error. They are
alternatives: the CPU environment (``pyproject.toml``) installs ``onnxruntime``, the GPU image
(``docker/requirements-ngc.txt``) ``onnxruntime-gpu`` only, and ``python -m common.ort_install --expect NAME``
fails an image build that ends up with anything else. ``python -m benchmarks compare`` and the GPU check record
:func:`inspect_install` beside their figures.
"""
from __future__ import annotations

import importlib.metadata
import sys
from dataclasses import dataclass, field
from typing import Callable, Sequence

from common import cli

# every PyPI distribution that provides the ``onnxruntime`` import package
DISTRIBUTIONS = ("onnxruntime", "onnxruntime-gpu", "onnxruntime-openvino", "onnxruntime-directml",
                 "onnxruntime-qnn", "onnxruntime-training", "onnxruntime-cann", "ort-nightly", "ort-nightly-gpu")
GPU_DISTRIBUTIONS = ("onnxruntime-gpu", "ort-nightly-gpu")


@dataclass
class OrtInstall:
    distributions: dict[str, str] = field(default_factory=dict)  # name -> version, of those installed
    providers: list[str] = field(default_factory=list)  # onnxruntime.get_available_providers()
    import_error: str | None = None

    def problems(self) -> list[str]:
        found = ", ".join(f"{name} {version}" for name, version in self.distributions.items())
        out = []
        if not self.distributions:
            out.append("ONNX Runtime is not installed (install exactly one of onnxruntime or onnxruntime-gpu)")
        elif len(self.distributions) > 1:
            out.append(f"{found} are installed together: they overwrite each other's files, so the CUDA provider can "
                       f"silently go missing; `pip uninstall -y {' '.join(self.distributions)}` and install one")
        if self.import_error:
            out.append(f"import onnxruntime fails: {self.import_error}")
        elif any(name in GPU_DISTRIBUTIONS for name in self.distributions) and \
                "CUDAExecutionProvider" not in self.providers:
            out.append(f"{found} is installed but offers no CUDAExecutionProvider (providers: "
                       f"{', '.join(self.providers) or 'none'})")
        return out

    def summary(self) -> str:
        found = ", ".join(f"{name} {version}" for name, version in self.distributions.items()) or "none"
        text = f"ONNX Runtime: {found}; providers: {', '.join(self.providers) or 'none'}"
        return text + "".join(f"; PROBLEM: {p}" for p in self.problems())

    def to_dict(self) -> dict:
        return {"distributions": dict(self.distributions), "providers": list(self.providers),
                "problems": self.problems()}


def inspect_install(version_of: Callable[[str], str] = importlib.metadata.version,
                    providers: Callable[[], list[str]] | None = None) -> OrtInstall:
    """The installed ONNX Runtime distributions and the providers the importable one offers.

    ``version_of`` and ``providers`` default to the real environment (``importlib.metadata``, onnxruntime itself).
    """
    installed = {}
    for name in DISTRIBUTIONS:
        try:
            installed[name] = version_of(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    result = OrtInstall(installed)
    if providers is None:
        try:
            import onnxruntime

            providers = onnxruntime.get_available_providers
        except Exception as exc:  # broken half-overwritten installs fail here
            result.import_error = f"{type(exc).__name__}: {exc}"
            return result
    result.providers = list(providers())
    return result


def main(argv: Sequence[str] | None = None) -> int:
    parser = cli.command_parser("python -m common.ort_install", __doc__)
    parser.add_argument("--expect", choices=DISTRIBUTIONS, help="fail unless exactly this distribution is installed")
    args = parser.parse_args(argv)
    install = inspect_install()
    print(install.summary())
    problems = install.problems()
    if args.expect and list(install.distributions) != [args.expect]:
        problems.append(f"expected only {args.expect}, found {', '.join(install.distributions) or 'none'}")
    for problem in problems:
        print(f"error: {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
