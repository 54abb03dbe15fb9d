"""The versioned Triton model repository: publish as version N+1 in one rename, keep K versions, roll back.

A build (or a rollback) produces a *package*: one folder per model of the family (``textclf`` alone, or ``textclf``
with its tokenizer, labels and ``textclf_text`` ensemble), each holding the configurations and the files of one
version::

    PACKAGE/package.json                 {"primary": "textclf", "members": ["textclf_tokenizer", ...]}
    PACKAGE/<model>/config.pbtxt         + configs/<target>.pbtxt
    PACKAGE/<model>/version/             model.onnx, model.py, lineage.json, model_config/ (a copy of the configs)

:func:`publish_package` puts every member in place under the same new version number: the version folder is built in
a hidden staging folder next to its final place and renamed in one step (``common.files.publish_dir``), then the
model-level configurations are replaced atomically from the version's own copy. Once the new version serves (or no
server is being rolled out to), :func:`prune_package` moves versions beyond ``keep`` out of Triton's sight in one
rename and deletes them; pruning earlier would leave nothing to fall back to when Triton cannot load the new one. A rollback publishes a kept version's files again as the newest
version, so Triton's ``latest`` policy serves it and the history stays linear (its lineage says ``rollback_of``).
An exclusive lock on the repository serializes concurrent publications.
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Iterator

from pydantic import BaseModel, ConfigDict, Field, model_validator

from common.config import read_mapping, validate
from common.errors import UserError
from common.files import atomic_copy, atomic_write_json, atomic_write_text, fsync_dir, publish_dir, staging_dir

PACKAGE_FILE = "package.json"
VERSION_STAGE = "version"
CONFIG_SNAPSHOT = "model_config"
DEFAULT_CONFIG_FILE = "config.pbtxt"
LINEAGE_FILE = "lineage.json"


def versions(model_dir: str | Path) -> list[int]:
    """The numeric version folders of a model, ascending."""
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        return []
    return sorted(int(p.name) for p in model_dir.iterdir() if p.is_dir() and p.name.isdigit())


def serving_version(model_dir: str | Path) -> int | None:
    """The version Triton serves under the ``latest 1`` policy the builders write: the highest one."""
    found = versions(model_dir)
    return found[-1] if found else None


def read_lineage(version_dir: str | Path) -> dict:
    path = Path(version_dir) / LINEAGE_FILE
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise UserError(f"{path}: not valid JSON ({exc})") from None


@contextlib.contextmanager
def locked(repository: Path) -> Iterator[None]:
    """Exclusive lock on the repository for the duration of a publication (blocks other builders, not Triton)."""
    repository.mkdir(parents=True, exist_ok=True)
    fd = os.open(repository, os.O_RDONLY | os.O_DIRECTORY)  # flock on the directory itself: no lock file to leave
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


# -- packages ----------------------------------------------------------------------------------------------------------
MODEL_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")  # a Triton model name, and a safe folder name


class _PackageFile(BaseModel):
    """``package.json``: its names become folders in the repository, so they are checked before anything is written."""

    model_config = ConfigDict(extra="forbid")

    primary: str = Field(pattern=MODEL_NAME.pattern)
    members: list[Annotated[str, Field(pattern=MODEL_NAME.pattern)]] = Field(min_length=1)

    @model_validator(mode="after")
    def _primary_is_a_member(self):
        if self.primary not in self.members:
            raise ValueError(f"primary {self.primary!r} is not one of the members {self.members}")
        return self


@dataclass(frozen=True)
class Package:
    root: Path
    primary: str
    members: tuple[str, ...]  # publication order: composing models first, the primary, the ensemble last

    @classmethod
    def read(cls, root: str | Path) -> "Package":
        root = Path(root)
        path = root / PACKAGE_FILE
        if not path.is_file():
            raise UserError(f"{root} is not a build package ({PACKAGE_FILE} is missing; expected the package/ folder "
                            "of a `python -m builders build --no-publish` run)")
        data = validate(_PackageFile, read_mapping(path), str(path))
        return cls(root, data.primary, tuple(data.members))

    def write(self) -> None:
        atomic_write_json(self.root / PACKAGE_FILE, {"primary": self.primary, "members": list(self.members)})

    def model_dir(self, member: str) -> Path:
        return self.root / member

    def version_dir(self, member: str) -> Path:
        return self.root / member / VERSION_STAGE


def config_files(model_dir: Path) -> dict[str, Path]:
    """Configuration files of a model folder (or package member), keyed by their path relative to it."""
    found = {}
    if (model_dir / DEFAULT_CONFIG_FILE).is_file():
        found[DEFAULT_CONFIG_FILE] = model_dir / DEFAULT_CONFIG_FILE
    if (model_dir / "configs").is_dir():
        for path in sorted((model_dir / "configs").glob("*.pbtxt")):
            found[f"configs/{path.name}"] = path
    return found


def _copy_tree(src: Path, dst: Path) -> None:
    for path in sorted(src.rglob("*")):
        target = dst / path.relative_to(src)
        if path.is_dir():
            target.mkdir(parents=True, exist_ok=True)
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, target)


def _stage_version(package: Package, member: str, parent: Path, number: int) -> Path:
    """A staged version folder: the package's files plus a snapshot of the configs they were built with."""
    staged = staging_dir(parent, f"{member}.v{number}")
    _copy_tree(package.version_dir(member), staged)
    snapshot = staged / CONFIG_SNAPSHOT
    for relative, path in config_files(package.model_dir(member)).items():
        target = snapshot / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, target)
    return staged


def _install_configs(package: Package, member: str, model_dir: Path) -> None:
    """Make the model-level configs those of the package (atomic per file; configs it lacks are removed)."""
    wanted = config_files(package.model_dir(member))
    for relative, path in wanted.items():
        atomic_copy(path, model_dir / relative)
    for relative, path in config_files(model_dir).items():
        if relative not in wanted:
            path.unlink()
    if (model_dir / "configs").is_dir():
        fsync_dir(model_dir / "configs")


def remove_out_of_sight(path: Path, graveyard: Path | None = None) -> None:
    """Take a folder out of Triton's view in one rename, then delete it (or move it to ``graveyard`` to inspect)."""
    hidden = path.with_name(f".removed.{path.name}.{os.getpid()}.{time.monotonic_ns()}")
    os.rename(path, hidden)
    fsync_dir(path.parent)
    if graveyard is not None:
        graveyard.mkdir(parents=True, exist_ok=True)
        shutil.move(str(hidden), str(graveyard / path.name))
    else:
        shutil.rmtree(hidden, ignore_errors=True)


def next_version(repository: Path, members: tuple[str, ...]) -> int:
    return max((serving_version(repository / m) or 0) for m in members) + 1


@dataclass
class Published:
    version: int
    previous: int | None


def check_plans(package: Package) -> None:
    """Refuse a package whose TensorRT plan this host's GPU / TensorRT cannot run (the message names the rebuild)."""
    from builders.tensorrt_meta import ensure_compatible, host_info, read_metadata

    host = None
    for member in package.members:
        plan = package.version_dir(member) / "model.plan"
        if plan.is_file():
            host = host or host_info()
            ensure_compatible(read_metadata(plan), host, f"{member}/model.plan")


def publish_package(package: Package, repository: str | Path, plan_check: bool = True) -> Published:
    """Publish every member of ``package`` as the same new version N+1, then keep the newest ``keep`` versions.

    With ``plan_check`` a TensorRT plan that this host could not load is refused before anything is written.
    """
    repository = Path(repository)
    if plan_check:
        check_plans(package)
    with locked(repository):
        number = next_version(repository, package.members)
        previous = serving_version(repository / package.primary)
        done: list[str] = []
        try:
            for member in package.members:
                _publish_member(package, member, repository, number)
                done.append(member)
        except BaseException:
            _undo(repository, done, number)  # a family is published whole or not at all
            raise
    return Published(number, previous)


def prune_package(package: Package, repository: str | Path, keep: int) -> dict[str, list[int]]:
    """Keep the newest ``keep`` versions of every member. Call it only once the new version serves (or no server is
    being rolled out to): a version Triton cannot load is retracted, and the one before it must still be there."""
    repository = Path(repository)
    with locked(repository):
        return {member: prune(repository / member, keep) for member in package.members}


def _undo(repository: Path, members: list[str], number: int, graveyard: Path | None = None) -> None:
    """Take version ``number`` of ``members`` out again and restore the configs of the version newest again."""
    for member in reversed(members):
        model_dir = repository / member
        if (model_dir / str(number)).is_dir():
            remove_out_of_sight(model_dir / str(number), graveyard / member if graveyard else None)
        restored = serving_version(model_dir)
        if restored is None:
            if model_dir.is_dir():
                remove_out_of_sight(model_dir, graveyard / f"{member}.model" if graveyard else None)
        elif (model_dir / str(restored) / CONFIG_SNAPSHOT).is_dir():
            _restore_configs(model_dir / str(restored) / CONFIG_SNAPSHOT, model_dir)


def _publish_member(package: Package, member: str, repository: Path, number: int) -> None:
    """Version ``number`` of one member in place (one rename), then its model-level configs."""
    model_dir = repository / member
    if not model_dir.is_dir():
        staged_model = staging_dir(repository, member)
        for relative, path in config_files(package.model_dir(member)).items():
            (staged_model / relative).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, staged_model / relative)
        staged_version = _stage_version(package, member, staged_model, number)
        os.rename(staged_version, staged_model / str(number))
        publish_dir(staged_model, model_dir)
        return
    staged_version = _stage_version(package, member, model_dir, number)
    try:
        publish_dir(staged_version, model_dir / str(number))
    except FileExistsError:
        shutil.rmtree(staged_version, ignore_errors=True)
        raise UserError(f"{model_dir / str(number)} appeared while publishing (another publisher without the "
                        "lock?); nothing was replaced, run the build again") from None
    _install_configs(package, member, model_dir)


def prune(model_dir: Path, keep: int) -> list[int]:
    """Remove all but the newest ``keep`` versions; returns the removed version numbers."""
    found = versions(model_dir)
    removed = found[:-keep] if len(found) > keep else []
    for number in removed:
        remove_out_of_sight(model_dir / str(number))
    return removed


def retract(repository: Path, package: Package, number: int, graveyard: Path) -> None:
    """Undo a publication whose version Triton could not load: move version ``number`` of every member out of the
    repository (kept in ``graveyard`` for inspection) and restore the configs of the version now newest again."""
    with locked(repository):
        _undo(repository, list(package.members), number, graveyard)


def _restore_configs(snapshot: Path, model_dir: Path) -> None:
    wanted = config_files(snapshot)
    for relative, path in wanted.items():
        atomic_copy(path, model_dir / relative)
    for relative, path in config_files(model_dir).items():
        if relative not in wanted:
            path.unlink()


def package_from_version(repository: Path, primary: str, number: int, root: Path) -> Package:
    """A package that re-publishes kept version ``number`` of ``primary`` and its family (for rollback)."""
    version_dir = repository / primary / str(number)
    kept = versions(repository / primary)
    if not version_dir.is_dir():
        raise UserError(f"model {primary!r} has no version {number} in {repository} "
                        f"(kept versions: {', '.join(map(str, kept)) or 'none'})")
    lineage = read_lineage(version_dir)
    members = tuple(lineage.get("family", {}).get("members", [primary]))
    for member in members:
        member_version = repository / member / str(number)
        if not member_version.is_dir():
            raise UserError(f"cannot roll back {primary!r} to version {number}: its family member {member!r} no "
                            f"longer has version {number} in {repository}")
        snapshot = member_version / CONFIG_SNAPSHOT
        if not (snapshot / DEFAULT_CONFIG_FILE).is_file():
            raise UserError(f"{snapshot / DEFAULT_CONFIG_FILE} is missing: version {number} of {member!r} was not "
                            "published by the builders and cannot be rolled back to")
        target = root / member
        _copy_tree(snapshot, target)
        _copy_tree(member_version, target / VERSION_STAGE)
        shutil.rmtree(target / VERSION_STAGE / CONFIG_SNAPSHOT, ignore_errors=True)
    package = Package(root, primary, members)
    package.write()
    return package


def write_lineage(package: Package, lineage: dict) -> None:
    """The same lineage record in every member's version folder."""
    text = json.dumps(lineage, indent=2) + "\n"
    for member in package.members:
        atomic_write_text(package.version_dir(member) / LINEAGE_FILE, text)
