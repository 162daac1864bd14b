"""Checksums for the dequantized-weights cache (float32 copies of GGUF files).

A copy is a Hugging Face model directory written once by :func:`logitprobe.load`.
When it is written, every file's size and SHA-256 go into ``logitprobe-checksums.json``
(the last file written, inside a temporary directory that is then renamed into
place), and every load checks them before the copy is used. Hashing the 538 MB
SmolLM2 copy takes ~0.3 s (SHA-256 runs on the CPU's SHA instructions; ~4% of a
warm load on the 2-core CI machine, see docs/guarantees.md).

A copy that fails the check (a changed, truncated, missing or extra file, no or an
unreadable checksum file) is rebuilt from the GGUF file by the caller, which
warns with :class:`DamagedCacheWarning`.

Hashing is skipped while no file has changed since it last matched, as git's index
does: each verified file's inode, size, modification and status-change times go into
a record beside the copy (``<copy>.verified.json``; the copy holds only what was
written). Any write to a file changes its status-change time (``st_ctime_ns``), which
no user-space call can set back, so a copy that was written to, replaced, truncated
or restored from elsewhere is hashed again. What a stat cannot see is damage below
the file system (a failing disk returning other bytes); ``LOGITPROBE_VERIFY_CACHE=always``
hashes on every load.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
import uuid
from pathlib import Path

__all__ = ["CHECKSUMS", "DamagedCacheWarning", "VERIFIED", "install", "problem",
           "write_checksums"]

CHECKSUMS = "logitprobe-checksums.json"
VERIFIED = "verified.json"  # beside the copy: stat signatures of its files as last hashed
_RACY_NS = 2_000_000_000  # files changed more recently than this are hashed again
_FORMAT = 1
_CHUNK = 1 << 24  # 16 MiB reads: hashing runs at memory speed, not per-call overhead


class DamagedCacheWarning(UserWarning):
    """A dequantized-weights copy in the cache failed its checksum and was rebuilt."""


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    buffer = bytearray(_CHUNK)
    view = memoryview(buffer)
    with open(path, "rb", buffering=0) as handle:
        while True:
            n = handle.readinto(buffer)
            if not n:
                break
            digest.update(view[:n])
    return digest.hexdigest()


def _files(directory: Path) -> list[Path]:
    return sorted(p for p in directory.iterdir() if p.name != CHECKSUMS)


def _verified_path(directory: Path) -> Path:
    """The stat record lives beside the copy, not in it: the copy's file list stays as written."""
    return directory.parent / f"{directory.name}.{VERIFIED}"


def _signature(path: Path) -> list[int]:
    st = path.stat()
    return [st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns]


def _stamp(directory: Path, present: dict[str, Path]) -> dict:
    """The stat signatures of the checksum file and of every file of the copy."""
    return {"checksums": _signature(directory / CHECKSUMS),
            "files": {name: _signature(path) for name, path in sorted(present.items())}}


def _trust_stat() -> bool:
    # Windows' st_ctime is the creation time, which a write does not move: always hash there.
    return (os.name != "nt"
            and os.environ.get("LOGITPROBE_VERIFY_CACHE", "").strip().lower() != "always")


def _unchanged_since_verified(directory: Path, stamp: dict) -> bool:
    try:
        return json.loads(_verified_path(directory).read_text("utf-8")) == stamp
    except (OSError, ValueError):
        return False


def _record_verified(directory: Path, present: dict[str, Path], stamp: dict) -> None:
    """Note ``stamp``, taken before the files were hashed and matched, as verified (best
    effort: a read-only cache is simply hashed on every load).

    Only when no file changed while it was hashed (the stamp is the same after), and not
    while a file changed within the last ``_RACY_NS``: file times come from a coarse
    clock, so a write in the same tick as the one recorded would keep every time the
    same (git's "racily clean" entries). Such a copy is hashed again next time.
    """
    try:
        if _stamp(directory, present) != stamp:
            return
        newest = max(sig[4] for sig in [stamp["checksums"], *stamp["files"].values()])
        if time.time_ns() - newest < _RACY_NS:
            return
        target = _verified_path(directory)
        tmp = target.parent / f".{target.name}.{uuid.uuid4().hex[:8]}"
        tmp.write_text(json.dumps(stamp), "utf-8")
        os.replace(tmp, target)
    except OSError:
        pass


def write_checksums(directory: Path) -> None:
    """Record the size and SHA-256 of every file in ``directory`` (call it last)."""
    files = {}
    for path in _files(directory):
        if not path.is_file():  # save_pretrained writes flat directories
            raise OSError(f"{path}: unexpected non-file in a dequantized copy")
        files[path.name] = {"size": path.stat().st_size, "sha256": _sha256(path)}
    record = {"format": _FORMAT, "algorithm": "sha256", "files": files}
    (directory / CHECKSUMS).write_text(json.dumps(record, indent=1, sort_keys=True), "utf-8")


def problem(directory: Path) -> str | None:
    """Why the copy in ``directory`` cannot be trusted, or None when every file matches.

    Sizes and names are checked before any file is hashed, so a truncated or
    incomplete copy is caught without reading it.
    """
    try:
        record = json.loads((directory / CHECKSUMS).read_text("utf-8"))
        files = record["files"]
        expected = {name: (int(entry["size"]), str(entry["sha256"]))
                    for name, entry in files.items()}
        if record.get("format") != _FORMAT or record.get("algorithm") != "sha256":
            return f"{CHECKSUMS} has an unknown format"
    except FileNotFoundError:
        return f"it has no {CHECKSUMS}"
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        return f"{CHECKSUMS} is unreadable ({type(exc).__name__})"
    try:
        present = {p.name: p for p in _files(directory)}
    except OSError as exc:
        return f"the directory cannot be listed ({type(exc).__name__})"
    if set(present) != set(expected):
        missing = sorted(set(expected) - set(present))
        extra = sorted(set(present) - set(expected))
        return ", ".join([*(f"{n} is missing" for n in missing),
                          *(f"{n} was added" for n in extra)])
    for name, (size, _) in expected.items():
        actual = present[name].stat().st_size if present[name].is_file() else -1
        if actual != size:
            return f"{name} is {actual} bytes, expected {size}"
    trust = _trust_stat()
    try:
        stamp = _stamp(directory, present) if trust else None
    except OSError:
        stamp = None
    if stamp is not None and _unchanged_since_verified(directory, stamp):
        return None
    for name, (_, digest) in expected.items():
        try:
            if _sha256(present[name]) != digest:
                return f"{name} does not match its checksum"
        except OSError as exc:
            return f"{name} cannot be read ({type(exc).__name__})"
    if stamp is not None:
        _record_verified(directory, present, stamp)
    return None


def install(built: Path, target: Path) -> bool:
    """Move the finished copy ``built`` to ``target``, replacing a damaged one there.

    Each step is a rename, so other processes see either the old directory, no
    directory, or the new one, never a half-written copy. Returns False when
    another process installed a copy first (then ``built`` is removed and the
    caller checks the one in place).
    """
    aside = None
    if target.exists():
        aside = target.parent / f".damaged-{target.name}-{uuid.uuid4().hex[:8]}"
        try:
            os.replace(target, aside)
        except FileNotFoundError:  # another process moved it first
            aside = None
    try:
        os.replace(built, target)
    except OSError:  # a non-empty directory is there: another process was faster
        shutil.rmtree(built, ignore_errors=True)
        return False
    finally:
        if aside is not None:
            shutil.rmtree(aside, ignore_errors=True)
    return True
