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

Crash safety (``kill -9`` at any moment): the family's publication record is written last and is the commit point;
every publication first reconciles what an interrupted one left (see :mod:`builders.publication`).

Ensembles during a rollout: Triton 2.51 reloads an ensemble whenever one of its composing models is loaded, keeping the
ensemble's *loaded* configuration but listing its versions from disk again, so an ensemble whose steps say "latest"
(-1) would report the new version while its steps still ran the old members. At publication every ensemble version
therefore names its exact member versions (``model_version: N``) and only its own version (``version_policy specific
[N]``), and the models it composes keep their two newest versions loaded (``latest 2``): until the ensemble itself is
loaded again, version N-1 keeps running on members N-1, then N switches to members N as a whole.
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Iterator

from pydantic import BaseModel, ConfigDict, Field, model_validator

from common.config import read_mapping, validate
from common.errors import UserError
from common.files import (atomic_write_bytes, atomic_write_json, atomic_write_text, fsync_dir,
                          publish_dir, staging_dir)
from builders.publication import crash_point

PACKAGE_FILE = "package.json"
VERSION_STAGE = "version"
CONFIG_SNAPSHOT = "model_config"
DEFAULT_CONFIG_FILE = "config.pbtxt"
LINEAGE_FILE = "lineage.json"


class RepositoryNotWritable(UserError):
    pass


def ensure_writable(repository: str | Path, action: str) -> None:
    """Refuse early, in one line, when ``action`` could not write into the repository (read-only mount, permissions):
    before a build runs its pipeline, before a publish stages anything."""
    repository = Path(repository)
    probe_dir = repository
    while not probe_dir.exists() and probe_dir != probe_dir.parent:
        probe_dir = probe_dir.parent
    try:
        fd, name = tempfile.mkstemp(prefix=".write-check.", dir=probe_dir)
        os.close(fd)
        os.unlink(name)
    except OSError as exc:
        raise RepositoryNotWritable(f"model repository {repository} is not writable ({exc.strerror}): {action} needs to "
                                    f"write a new version there; nothing was changed") from None


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


def publication_configs(package: Package, member: str, number: int) -> dict[str, bytes]:
    """The configurations ``member`` is published with as version ``number``, by relative path.

    An ensemble names the exact version of every family member it runs and serves only its own version; a model an
    ensemble of the family composes keeps its two newest versions (see the module docstring). Other configurations are
    published byte for byte."""
    from common.triton_config import config_to_text, parse_config_text

    composed = set()
    parsed: dict[str, dict[str, object]] = {}
    for name in package.members:
        parsed[name] = {}
        for relative, path in config_files(package.model_dir(name)).items():
            config = parse_config_text(path.read_text(encoding="utf-8"), str(path))
            parsed[name][relative] = config
            if config.platform == "ensemble":
                composed |= {step.model_name for step in config.ensemble_scheduling.step}
    out = {}
    for relative, config in parsed[member].items():
        original = config_files(package.model_dir(member))[relative].read_bytes()
        changed = False
        if config.platform == "ensemble":
            for step in config.ensemble_scheduling.step:
                if step.model_name in package.members:
                    step.model_version = number
            config.version_policy.specific.versions[:] = [number]
            changed = True
        elif member in composed and config.version_policy.WhichOneof("policy_choice") in (None, "latest"):
            config.version_policy.latest.num_versions = max(2, config.version_policy.latest.num_versions)
            changed = True
        out[relative] = config_to_text(config).encode("utf-8") if changed else original
    return out


def _write_configs(configs: dict[str, bytes], target: Path, atomic: bool = False) -> None:
    for relative, data in configs.items():
        path = target / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        if atomic:
            atomic_write_bytes(path, data)
            crash_point(f"installed {path}")
        else:
            path.write_bytes(data)


def _stage_version(package: Package, member: str, parent: Path, number: int) -> Path:
    """A staged version folder: the package's files, a snapshot of the configs it is published with, and its lineage
    stamped with the version number and every file's SHA-256 (what rollback and lint verify later)."""
    from builders.publication import STAMP, file_hashes

    staged = staging_dir(parent, f"{member}.v{number}")
    crash_point(f"staging {member} v{number}")
    _copy_tree(package.version_dir(member), staged)
    _write_configs(publication_configs(package, member, number), staged / CONFIG_SNAPSHOT)
    lineage = read_lineage(staged)
    lineage[STAMP] = {"version": number, "files": file_hashes(staged)}
    atomic_write_text(staged / LINEAGE_FILE, json.dumps(lineage, indent=2) + "\n")
    crash_point(f"staged {member} v{number}")
    return staged


def _replace_configs(wanted: dict[str, bytes], model_dir: Path) -> None:
    """Make ``model_dir``'s configs exactly ``wanted`` (each file atomic and durable; configs it lacks are removed,
    and the removals made durable too). Publishing and restoring both go through here."""
    _write_configs(wanted, model_dir, atomic=True)
    for relative, path in config_files(model_dir).items():
        if relative not in wanted:
            path.unlink()
    for folder in (model_dir, model_dir / "configs"):
        if folder.is_dir():
            fsync_dir(folder)


def _install_configs(package: Package, member: str, model_dir: Path, number: int) -> None:
    """Make the model-level configs those of the version."""
    _replace_configs(publication_configs(package, member, number), model_dir)


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
    from builders.publication import read_record, reconcile, record_path, write_record

    repository = Path(repository)
    ensure_writable(repository, "publish")
    if plan_check:
        check_plans(package)
    with locked(repository):
        for line in reconcile(repository):  # what an interrupted publication left, before numbering this one
            print(line, flush=True)
        number = next_version(repository, package.members)
        previous = serving_version(repository / package.primary)
        record = record_path(repository, package.primary)
        before = record.read_bytes() if record.is_file() else None
        visible = (read_record(repository, package.primary) or {}).get("version") if before else _complete_version(
            repository, package.members)  # a family published before records existed: its highest whole version
        write_record(repository, package.primary, package.members, visible, pending=number)
        crash_point(f"record of {package.primary}: v{number} pending")
        done: list[str] = []
        try:
            for member in package.members:
                _publish_member(package, member, repository, number)
                done.append(member)
            crash_point(f"every member of {package.primary} at v{number}, before the record")
            write_record(repository, package.primary, package.members, number)  # the commit point
            crash_point(f"record of {package.primary} says v{number}")
        except BaseException:
            _undo(repository, done, number)  # a family is published whole or not at all
            if before is None:
                record.unlink(missing_ok=True)
            else:
                atomic_write_bytes(record, before)
            raise
    return Published(number, previous)


def _complete_version(repository: Path, members) -> int | None:
    """The highest version every member has (None when they share none)."""
    common = set.intersection(*(set(versions(repository / m)) for m in members)) if members else set()
    return max(common, default=None)


def prune_package(package: Package, repository: str | Path, keep: int) -> dict[str, list[int]]:
    """Keep the newest ``keep`` versions of every member. Call it only once the new version serves (or no server is
    being rolled out to): a version Triton cannot load is retracted, and the one before it must still be there."""
    repository = Path(repository)
    with locked(repository):
        pruned = {}
        for member in package.members:
            pruned[member] = prune(repository / member, keep)
            crash_point(f"pruned {member}")
        return pruned


def _undo(repository: Path, members: list[str], number: int, graveyard: Path | None = None) -> None:
    """Take version ``number`` of ``members`` out again and restore the configs of the version newest again."""
    for member in reversed(members):
        model_dir = repository / member
        restored = max((n for n in versions(model_dir) if n != number), default=None)
        if restored is not None and (model_dir / str(restored) / CONFIG_SNAPSHOT).is_dir():
            _restore_configs(model_dir / str(restored) / CONFIG_SNAPSHOT, model_dir)  # configs first, then the version
        if (model_dir / str(number)).is_dir():
            remove_out_of_sight(model_dir / str(number), graveyard / member if graveyard else None)
        if restored is None and model_dir.is_dir():
            remove_out_of_sight(model_dir, graveyard / f"{member}.model" if graveyard else None)


def _publish_member(package: Package, member: str, repository: Path, number: int) -> None:
    """Version ``number`` of one member in place (one rename), then its model-level configs."""
    model_dir = repository / member
    if not model_dir.is_dir():
        staged_model = staging_dir(repository, member)
        _write_configs(publication_configs(package, member, number), staged_model)
        staged_version = _stage_version(package, member, staged_model, number)
        os.rename(staged_version, staged_model / str(number))
        publish_dir(staged_model, model_dir)
        crash_point(f"published new model {member} v{number}")
        return
    staged_version = _stage_version(package, member, model_dir, number)
    try:
        publish_dir(staged_version, model_dir / str(number))
    except FileExistsError:
        shutil.rmtree(staged_version, ignore_errors=True)
        raise UserError(f"{model_dir / str(number)} appeared while publishing (another publisher without the "
                        "lock?); nothing was replaced, run the build again") from None
    crash_point(f"published {member} v{number}")
    _install_configs(package, member, model_dir, number)


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
    from builders.publication import read_record, write_record

    with locked(repository):
        record = read_record(repository, package.primary)
        if record is not None and record["version"] == number:
            kept = [set(versions(repository / m)) - {number} for m in package.members]
            previous = max(set.intersection(*kept), default=None) if kept else None
            # uncommit first (a kill from here on is finished by reconcile), then remove, then finish the record
            write_record(repository, package.primary, package.members, previous, pending=number)
            _undo(repository, list(package.members), number, graveyard)
            write_record(repository, package.primary, package.members, previous)
        else:
            _undo(repository, list(package.members), number, graveyard)


def _restore_configs(snapshot: Path, model_dir: Path) -> None:
    """Make ``model_dir``'s configs those of a version's snapshot again."""
    _replace_configs({relative: path.read_bytes() for relative, path in config_files(snapshot).items()}, model_dir)


def package_from_version(repository: Path, primary: str, number: int, root: Path) -> Package:
    """A package that re-publishes kept version ``number`` of ``primary`` and its family (for rollback)."""
    from builders.publication import read_record, verify_version

    version_dir = repository / primary / str(number)
    kept = versions(repository / primary)
    if not version_dir.is_dir():
        raise UserError(f"model {primary!r} has no version {number} in {repository} "
                        f"(kept versions: {', '.join(map(str, kept)) or 'none'})")
    if not (version_dir / LINEAGE_FILE).is_file():
        raise UserError(f"cannot roll back {primary!r} to version {number}: {version_dir / LINEAGE_FILE} is missing, so "
                        "neither its family nor its files can be verified (rolling back the model alone would split "
                        "its family)")
    lineage = read_lineage(version_dir)
    record = read_record(repository, primary)
    members = tuple(lineage.get("family", {}).get("members") or (record or {}).get("members") or [primary])
    if record is not None and set(record["members"]) != set(members):
        raise UserError(f"cannot roll back {primary!r} to version {number}: its lineage names the family "
                        f"{list(members)} but the publication record names {record['members']}")
    for member in members:
        member_version = repository / member / str(number)
        if not member_version.is_dir():
            raise UserError(f"cannot roll back {primary!r} to version {number}: its family member {member!r} no "
                            f"longer has version {number} in {repository}")
        problems = verify_version(member_version)
        if problems:
            raise UserError(f"cannot roll back {primary!r} to version {number}: {problems[0]}"
                            + (f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""))
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
