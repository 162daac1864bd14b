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
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
from pathlib import Path

__all__ = ["CHECKSUMS", "DamagedCacheWarning", "install", "problem", "write_checksums"]

CHECKSUMS = "logitprobe-checksums.json"
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
    for name, (_, digest) in expected.items():
        try:
            if _sha256(present[name]) != digest:
                return f"{name} does not match its checksum"
        except OSError as exc:
            return f"{name} cannot be read ({type(exc).__name__})"
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
