"""The snapshot file: what a snapshot stores, and its diff-friendly YAML format.

``__snapshots__/<test file>.snap.yaml`` holds a header (format, library versions)
and the entries by key, sorted, one token a line, so a changed prediction is a
one-line diff. :class:`SnapshotFile` reads it once and writes it back atomically,
merging with what other writers (xdist workers) saved meanwhile. Comparing an
entry with a run is :mod:`logitprobe.snapshots`.
"""

from __future__ import annotations

import math
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import yaml

from ._provenance import library_versions
from ._text import clip
from .errors import SnapshotError

__all__ = ["FORMAT", "Entry", "SnapshotFile", "StoredCase", "StoredToken", "dumps", "rounded"]

FORMAT = 1


# -- what is stored ----------------------------------------------------------------------
@dataclass(frozen=True)
class StoredToken:
    rank: int
    id: int
    token: str
    logprob: float


@dataclass(frozen=True)
class StoredCase:
    prompt: str
    entropy: float
    top: tuple[StoredToken, ...]


@dataclass(frozen=True)
class Entry:
    """One snapshot check: provenance, the query, and one :class:`StoredCase` per prompt."""

    model: str
    fingerprint: str
    dtype: str
    device: str
    k: int
    cases: tuple[StoredCase, ...]
    position: int = -1
    interventions: str | None = None  # canonical JSON of the specs, None without

    def query(self) -> tuple:
        return (tuple(c.prompt for c in self.cases), self.k, self.position, self.interventions)


# -- the file ----------------------------------------------------------------------------
def _quote(text: str) -> str:
    """A YAML double-quoted scalar: printable characters as they are, others escaped."""
    out = []
    for ch in text:
        if ch in '"\\':
            out.append("\\" + ch)
        elif ch.isprintable() and ch not in "\u2028\u2029\x85\ufeff":
            out.append(ch)
        elif ord(ch) < 0x10000 and not 0xD800 <= ord(ch) <= 0xDFFF:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(f"\\U{ord(ch):08x}")
    return '"' + "".join(out) + '"'


def rounded(x: float) -> float:
    """``x`` as the file stores it (7 significant digits), so a value read back equals it."""
    return float(_num(x).replace(".inf", "inf").replace(".nan", "nan"))


def _num(x: float) -> str:
    if math.isnan(x):
        return ".nan"
    if math.isinf(x):
        return "-.inf" if x < 0 else ".inf"
    return f"{x:.7g}"


class SnapshotFile:
    """One snapshot file: entries by key, read once, written back when changed."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._entries: dict[str, Entry] | None = None
        self.dirty = False
        self.written: set[str] = set()
        self.removed: set[str] = set()

    @property
    def entries(self) -> dict[str, Entry]:
        if self._entries is None:
            self._entries = self._read()
        return self._entries

    def get(self, key: str) -> Entry | None:
        return self.entries.get(key)

    def set(self, key: str, entry: Entry) -> None:
        self.entries[key] = entry
        self.written.add(key)
        self.removed.discard(key)
        self.dirty = True

    def remove(self, key: str) -> None:
        if self.entries.pop(key, None) is not None:
            self.removed.add(key)
            self.dirty = True

    def _read(self) -> dict[str, Entry]:
        if not self.path.exists():
            return {}
        try:
            data = yaml.load(self.path.read_text(encoding="utf-8"),
                             Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
            return {str(k): _entry(v) for k, v in (data.get("snapshots") or {}).items()}
        except (yaml.YAMLError, AttributeError, KeyError, TypeError, ValueError) as exc:
            raise SnapshotError(f"{self.path}: not a readable snapshot file ({type(exc).__name__}: "
                                f"{clip(str(exc), 200)}); delete it and rewrite it with "
                                "pytest --logitprobe-snapshot-update") from None

    def save(self) -> None:
        """Write the file (merging with what is on disk now, for concurrent writers)."""
        if not self.dirty:
            return
        on_disk = SnapshotFile(self.path).entries if self.path.exists() else {}
        merged = {k: v for k, v in on_disk.items() if k not in self.removed}
        merged.update({k: self.entries[k] for k in self.written if k in self.entries})
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".snap-", suffix=".tmp")
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(dumps(merged))
        os.replace(tmp, self.path)
        self._entries = merged
        self.dirty = False


def _entry(raw: dict) -> Entry:
    cases = tuple(StoredCase(str(c["prompt"]), float(c["entropy"]),
                             tuple(StoredToken(int(r), int(i), str(t), float(lp))
                                   for r, i, t, lp in c["top"]))
                  for c in raw["cases"])
    return Entry(model=str(raw["model"]), fingerprint=str(raw["fingerprint"]),
                 dtype=str(raw["dtype"]), device=str(raw["device"]), k=int(raw["k"]),
                 cases=cases, position=int(raw.get("position", -1)),
                 interventions=raw.get("interventions"))


def dumps(entries: dict[str, Entry]) -> str:
    """The file's text: a header, library versions, then entries sorted by key, one token a line."""
    versions = ", ".join(f"{k}: {_quote(v)}" for k, v in library_versions().items())
    lines = ["# logitprobe snapshots: the top-k next tokens per prompt (rank, id, token, logprob).",
             "# Rewrite with: pytest --logitprobe-snapshot-update",
             f"format: {FORMAT}", f"versions: {{{versions}}}", "snapshots:"]
    for key in sorted(entries):
        e = entries[key]
        lines += [f"  {_quote(key)}:", f"    model: {_quote(e.model)}",
                  f"    fingerprint: {_quote(e.fingerprint)}", f"    dtype: {e.dtype}",
                  f"    device: {_quote(e.device)}", f"    k: {e.k}"]
        if e.position != -1:
            lines.append(f"    position: {e.position}")
        if e.interventions is not None:
            lines.append(f"    interventions: {_quote(e.interventions)}")
        lines.append("    cases:")
        for c in e.cases:
            lines += [f"    - prompt: {_quote(c.prompt)}", f"      entropy: {_num(c.entropy)}",
                      "      top:"]
            lines += [f"      - [{t.rank}, {t.id}, {_quote(t.token)}, {_num(t.logprob)}]"
                      for t in c.top]
    return "\n".join(lines) + "\n"

