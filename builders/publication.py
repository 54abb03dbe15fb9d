"""A model family publishes whole or not at all, also under ``kill -9``: the publication record and its reconciliation.

A family (``digits`` alone, or ``textclf`` with ``textclf_tokenizer``, ``textclf_labels`` and the ``textclf_text``
ensemble) is published as version N by several renames, one per member, each followed by that member's model-level
configurations. A kill between two of them used to leave a family split (a new tokenizer under an old ensemble), and
nothing noticed. Now each family has a **record**, ``REPOSITORY/<primary>.family.json``, a file at the repository root
(Triton only reads folders there). A publication of version N first writes it with ``"pending": N`` beside the visible
version, then puts every member's version N and configurations in place, and commits by rewriting it without
``pending`` (one atomic write)::

    {"format_version": 1, "primary": "textclf", "members": ["textclf_tokenizer", ...], "version": 3}

A family's visible version is the one its record names. A member version above it is a leftover of an interrupted
publication (or retraction). :func:`reconcile` (run by every publish, rollback and retraction under the repository
lock, and by ``python -m clients serve`` before Triton starts) removes leftovers, restores those members' model-level
configurations from the recorded version's snapshot, finishes the record, and deletes staging folders left by killed
publishers (a hidden folder at the repository root makes Triton refuse to start). :func:`inspect` reports the same
without changing anything (``python -m builders versions`` and ``lint``).

Model folders no record names (published before records existed, or copied from another repository) are never touched.
Every version folder a publisher writes also carries a ``publication`` stamp in its ``lineage.json``: its number and the
SHA-256 of each of its files, which rollback and lint verify.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
from dataclasses import dataclass, field
from pathlib import Path

from common.errors import UserError
from common.files import atomic_write_text, fsync_dir

RECORD_SUFFIX = ".family.json"
STAMP = "publication"
CRASH_ENV = "BUILDERS_CRASH_AT"  # tests: SIGKILL this process at the N-th crash point (see crash_point)
_crash_count = 0


def crash_point(label: str) -> None:
    """A moment of a publication where a ``kill -9`` could land. With ``$BUILDERS_CRASH_AT=N`` the N-th one reached
    kills the process (SIGKILL, nothing runs after it), so tests can stop a real publish at every step in turn; with
    any other value, the first one whose label contains it."""
    global _crash_count
    wanted = os.environ.get(CRASH_ENV)
    if not wanted:
        return
    _crash_count += 1
    if _crash_count == int(wanted) if wanted.isdigit() else wanted in label:
        print(f"crash point {_crash_count}: {label}", flush=True)
        os.kill(os.getpid(), signal.SIGKILL)


# -- the record --------------------------------------------------------------------------------------------------------
def record_path(repository: Path, primary: str) -> Path:
    return Path(repository) / f"{primary}{RECORD_SUFFIX}"


def read_record(repository: Path, primary: str) -> dict | None:
    path = record_path(repository, primary)
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(data.get("members"), list) or not isinstance(data.get("version"), (int, type(None))):
            raise ValueError("expected members (a list) and version (an integer)")
        return data
    except ValueError as exc:
        raise UserError(f"{path}: not a publication record ({exc}); restore it from the family's lineage.json or "
                        "delete it to let the next publish re-create it") from None


def write_record(repository: Path, primary: str, members, version: int | None, pending: int | None = None) -> None:
    """The family's visible ``version`` (and a publication of ``pending`` in progress) in one atomic write; with neither
    the record is removed (a family that never completed a publication)."""
    path = record_path(repository, primary)
    if version is None and pending is None:
        if path.exists():
            path.unlink()
            fsync_dir(path.parent)
        return
    data = {"format_version": 1, "primary": primary, "members": list(members), "version": version}
    if pending is not None:
        data["pending"] = pending
    atomic_write_text(path, json.dumps(data, indent=2) + "\n")


# -- what is on disk ---------------------------------------------------------------------------------------------------
def _versions(model_dir: Path) -> list[int]:
    from builders.repository import versions

    return versions(model_dir)


def _lineage(version_dir: Path) -> dict:
    try:
        return json.loads((version_dir / "lineage.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def _stamped_family(version_dir: Path) -> str | None:
    """The family primary of a version a record-aware publisher wrote (None for legacy or hand-made versions)."""
    lineage = _lineage(version_dir)
    if STAMP not in lineage:
        return None
    return (lineage.get("family") or {}).get("primary") or version_dir.parent.name


def stale_folders(repository: Path) -> list[Path]:
    """Staging and half-removed folders killed publishers leave: ``.NAME.*.staging`` and ``.removed.*``, at the root
    (where Triton refuses to start because of them) and inside model folders."""
    repository = Path(repository)
    found = []
    parents = [repository] + [p for p in repository.iterdir() if p.is_dir() and not p.name.startswith(".")]
    for parent in parents:
        for path in parent.iterdir():
            if path.is_dir() and path.name.startswith(".") and (path.name.endswith(".staging")
                                                                 or path.name.startswith(".removed.")):
                found.append(path)
    return sorted(found)


@dataclass
class FamilyState:
    primary: str
    members: list[str]
    version: int | None  # the recorded (visible) version; None: the first publication has not completed
    pending: int | None = None  # a publication (or retraction) of this version did not finish
    leftovers: dict[str, list[int]] = field(default_factory=dict)  # member -> versions of an interrupted publication
    missing: list[str] = field(default_factory=list)  # members without the recorded version (cannot be repaired)

    @property
    def split(self) -> bool:
        return bool(self.leftovers or self.missing or self.pending is not None)

    def describe(self) -> str:
        parts = [f"the publication of version {self.pending} did not finish"] if self.pending is not None else []
        if self.leftovers:
            parts.append("versions not published (an interrupted publication): " + ", ".join(
                f"{m} v{','.join(map(str, v))}" for m, v in sorted(self.leftovers.items())))
        if self.missing:
            parts.append(f"members without version {self.version}: {', '.join(self.missing)}")
        where = f"version {self.version}" if self.version is not None else "no published version yet"
        return f"family {self.primary!r} ({where}) is split: " + "; ".join(parts)


def _configs_differ(model_dir: Path, snapshot: Path) -> bool:
    from builders.repository import config_files

    have, want = config_files(model_dir), config_files(snapshot)
    return set(have) != set(want) or any(have[k].read_bytes() != want[k].read_bytes() for k in want)


def inspect(repository: str | Path) -> list[FamilyState]:
    """Every family of the repository and whether it is split (reads only)."""
    repository = Path(repository)
    if not repository.is_dir():
        return []
    families = []
    for path in sorted(repository.glob(f"*{RECORD_SUFFIX}")):
        primary = path.name[:-len(RECORD_SUFFIX)]
        record = read_record(repository, primary)
        state = FamilyState(primary, list(record["members"]), record["version"], record.get("pending"))
        for member in state.members:
            found = _versions(repository / member)
            if state.version is None:  # only what this family's publisher wrote
                above = [n for n in found if _stamped_family(repository / member / str(n)) == primary]
            else:
                above = [n for n in found if n > state.version]
                if state.version not in found:
                    state.missing.append(member)
            if above:
                state.leftovers[member] = above
        families.append(state)
    return families


def split_families(repository: str | Path) -> list[FamilyState]:
    return [state for state in inspect(repository) if state.split]


# -- repair ------------------------------------------------------------------------------------------------------------
def reconcile(repository: str | Path) -> list[str]:
    """Bring every family back to its recorded version and delete stale staging folders; returns what was done.

    Call it holding the repository lock (:func:`builders.repository.locked`): a staging folder seen then is stale.
    A member missing its recorded version cannot be repaired here and raises :class:`UserError`.
    """
    from builders.repository import _restore_configs, remove_out_of_sight

    repository = Path(repository)
    done = []
    for path in stale_folders(repository):
        shutil.rmtree(path)
        done.append(f"removed stale staging folder {path} (left by an interrupted publication)")
    if done:
        fsync_dir(repository)
    for state in split_families(repository):
        if state.missing:
            raise UserError(state.describe() + " — the recorded version is gone, so it cannot be repaired "
                            "automatically; roll back to a version every member still has (`python -m builders "
                            "versions`), or publish the family again")
        for member, numbers in sorted(state.leftovers.items()):
            model_dir = repository / member
            kept = [n for n in _versions(model_dir) if n not in numbers]
            target = state.version if state.version is not None else (kept[-1] if kept else None)
            snapshot = model_dir / str(target) / "model_config"
            if target is not None and snapshot.is_dir() and _configs_differ(model_dir, snapshot):
                _restore_configs(snapshot, model_dir)  # first: a kill after this leaves the leftover to find again
            for number in numbers:
                if (model_dir / str(number)).is_dir():
                    remove_out_of_sight(model_dir / str(number))
            if not _versions(model_dir) and model_dir.is_dir():
                remove_out_of_sight(model_dir)  # a first publication that never completed
        write_record(repository, state.primary, state.members, state.version)  # finished: no pending, or no record
        done.append(state.describe().replace(" is split: ", " was split: ")
                    + f"; restored to {'version ' + str(state.version) if state.version else 'nothing published'}")
    return done


def file_hashes(version_dir: Path) -> dict[str, str]:
    """SHA-256 of every file of a version folder except ``lineage.json`` itself, by relative path."""
    from common.files import sha256_file

    return {str(p.relative_to(version_dir)): sha256_file(p) for p in sorted(version_dir.rglob("*"))
            if p.is_file() and p != version_dir / "lineage.json"}


def verify_version(version_dir: Path) -> list[str]:
    """Problems of a kept version against the hashes in its ``lineage.json`` (empty when every file verifies).

    Versions published before the stamp existed are checked against the ONNX and tokenizer hashes their lineage has."""
    from common.files import sha256_file

    if not (version_dir / "lineage.json").is_file():
        return [f"{version_dir / 'lineage.json'} is missing: the version's files cannot be verified"]
    lineage = _lineage(version_dir)
    if not lineage:
        return [f"{version_dir / 'lineage.json'} is not valid JSON"]
    expected = (lineage.get(STAMP) or {}).get("files")
    if expected is None:  # legacy
        expected = {}
        onnx = (lineage.get("onnx") or {}).get("sha256")
        if onnx and (version_dir / "model.onnx").exists():
            expected["model.onnx"] = onnx
        tokenizer = (lineage.get("checkpoint") or {}).get("tokenizer_sha256")
        if tokenizer and (version_dir / "tokenizer.json").exists():
            expected["tokenizer.json"] = tokenizer
    problems = []
    for relative, digest in sorted(expected.items()):
        path = version_dir / relative
        if not path.is_file():
            problems.append(f"{path} is missing (lineage.json lists it)")
        elif sha256_file(path) != digest:
            problems.append(f"{path} does not match its SHA-256 in lineage.json (changed or truncated)")
    return problems
