"""The dequantized-weights cache: checksums written with the copy, checked on every load,
a damaged copy rebuilt with one DamagedCacheWarning.

Every test here writes to its own LOGITPROBE_CACHE_DIR (never the shared cache). The
"GGUF file" is a stand-in whose reader returns the tiny random GPT-2, so each
(re)build takes a fraction of a second; the cache machinery around it is the real one.
"""

import json
import os
import warnings
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import logitprobe
from logitprobe import ModelUnavailableError, _weights_cache, loading
from logitprobe._weights_cache import CHECKSUMS, DamagedCacheWarning

PROMPT = "The cat sat on the"


class _CountingPath(type(Path())):
    reads: list


@pytest.fixture
def fake_gguf(tmp_path, monkeypatch, tiny_gpt2_dir):
    """A .gguf path whose 'dequantization' loads the tiny GPT-2; counts the reads."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    monkeypatch.setenv("LOGITPROBE_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(loading, "_LOADED", {})
    path = _CountingPath(tmp_path / "tiny.gguf")
    path.write_bytes(b"GGUF stand-in")
    reads = []

    def read_gguf(p, spec, dtype):
        reads.append(p)
        return (AutoModelForCausalLM.from_pretrained(str(tiny_gpt2_dir), dtype=dtype).eval(),
                AutoTokenizer.from_pretrained(str(tiny_gpt2_dir)))

    monkeypatch.setattr(loading, "_read_gguf", read_gguf)
    path.reads = reads
    return path


def fresh_load(path, monkeypatch):
    """A load as a new process would do it (no probe kept from an earlier load)."""
    monkeypatch.setattr(loading, "_LOADED", {})
    return logitprobe.load(str(path), device="cpu")


def reference_logits(tiny_hf):
    model, tokenizer = tiny_hf
    with torch.no_grad():
        return model(tokenizer(PROMPT, return_tensors="pt").input_ids).logits[0, -1]


def test_first_load_writes_checksums_later_loads_check_them(fake_gguf, monkeypatch, tiny_hf):
    fresh_load(fake_gguf, monkeypatch)
    target = loading.dequantized_dir(fake_gguf)
    record = json.loads((target / CHECKSUMS).read_text())
    assert record["algorithm"] == "sha256"
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= set(record["files"])
    assert not [p for p in target.parent.iterdir() if p.name.startswith(".")]  # no leftovers
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # an intact copy: no warning, no rebuild
        again = fresh_load(fake_gguf, monkeypatch)
    assert len(fake_gguf.reads) == 1
    torch.testing.assert_close(again.next_token(PROMPT).logits, reference_logits(tiny_hf),
                               atol=1e-4, rtol=1e-4)


def _overwrite(path, offset, data):
    with open(path, "r+b") as handle:
        handle.seek(offset)
        handle.write(data)


DAMAGE = {
    # name: (how, words the warning must contain)
    "garbage in the weights": (lambda d: _overwrite(d / "model.safetensors", 200_000, b"\xff" * 4096),
                               "model.safetensors does not match its checksum"),
    "64 KB zeroed": (lambda d: _overwrite(d / "model.safetensors", 300_000, b"\0" * 65536),
                     "model.safetensors does not match its checksum"),
    "truncated weights": (lambda d: (d / "model.safetensors").write_bytes(
        (d / "model.safetensors").read_bytes()[:1000]), "model.safetensors is 1000 bytes"),
    "bad config": (lambda d: (d / "config.json").write_text("{not json"),
                   "config.json is 9 bytes"),
    "config edited, same size": (lambda d: (d / "config.json").write_text(
        (d / "config.json").read_text().replace('"n_layer": 2', '"n_layer": 1')),
        "config.json does not match its checksum"),
    "missing config": (lambda d: (d / "config.json").unlink(), "config.json is missing"),
    "missing checksums": (lambda d: (d / CHECKSUMS).unlink(), f"it has no {CHECKSUMS}"),
    "unreadable checksums": (lambda d: (d / CHECKSUMS).write_text("[]"), f"{CHECKSUMS} is unreadable"),
    "extra weights file": (lambda d: (d / "model-00002.safetensors").write_bytes(b"x"),
                           "model-00002.safetensors was added"),
}


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_a_damaged_copy_is_rebuilt_with_one_warning(fake_gguf, monkeypatch, tiny_hf, damage):
    fresh_load(fake_gguf, monkeypatch)
    target = loading.dequantized_dir(fake_gguf)
    how, words = DAMAGE[damage]
    how(target)
    with pytest.warns(DamagedCacheWarning) as caught:
        probe = fresh_load(fake_gguf, monkeypatch)
    [warning] = [w for w in caught if issubclass(w.category, DamagedCacheWarning)]
    message = str(warning.message)
    assert words in message and "rebuilding it" in message and "\n" not in message
    assert warning.filename == __file__  # points at the caller's load(), not at logitprobe
    assert len(fake_gguf.reads) == 2
    torch.testing.assert_close(probe.next_token(PROMPT).logits, reference_logits(tiny_hf),
                               atol=1e-4, rtol=1e-4)
    assert _weights_cache.problem(target) is None
    assert not [p for p in target.parent.iterdir() if p.name.startswith(".")]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fresh_load(fake_gguf, monkeypatch)  # repaired for good
    assert len(fake_gguf.reads) == 2


def test_intact_files_that_cannot_be_loaded_are_rebuilt_once_then_explained(fake_gguf, monkeypatch):
    fresh_load(fake_gguf, monkeypatch)
    calls = []

    def unreadable(path, spec, *args):
        calls.append(path)
        raise ModelUnavailableError(f"model={spec!r}: could not load the directory")

    monkeypatch.setattr(loading, "_boot_local_dir", unreadable)
    with pytest.warns(DamagedCacheWarning, match="it could not be loaded"):
        with pytest.raises(ModelUnavailableError, match=r"even just after rebuilding it.*"
                                                        r"Delete .* and try again"):
            fresh_load(fake_gguf, monkeypatch)
    assert len(calls) == 2 and len(fake_gguf.reads) == 2


class _Bar:
    """A tqdm-like bar that records what it is told."""

    shown: list = []

    def __init__(self, total, desc):
        self.total, self.desc, self.done, self.closed = total, desc, 0, False
        self.shown.append(self)

    def update(self, n=1):
        self.done += n

    def close(self):
        self.closed = True


def test_progress_shows_the_dequantization_only(fake_gguf, monkeypatch):
    _Bar.shown = []
    monkeypatch.setattr(loading, "_LOADED", {})
    logitprobe.load(str(fake_gguf), device="cpu", progress=_Bar)
    [bar] = _Bar.shown
    assert "dequantizing tiny.gguf" in bar.desc and bar.done == bar.total == 3 and bar.closed
    monkeypatch.setattr(loading, "_LOADED", {})
    logitprobe.load(str(fake_gguf), device="cpu", progress=_Bar)
    assert len(_Bar.shown) == 1  # a warm load is not slow work: no bar


def test_progress_true_draws_on_stderr_only_when_asked(fake_gguf, monkeypatch, capfd):
    capfd.readouterr()
    logitprobe.load(str(fake_gguf), device="cpu", progress=True)
    assert "dequantizing tiny.gguf" in capfd.readouterr().err
    fresh_load(fake_gguf, monkeypatch)  # a warm load, progress or not, prints nothing
    monkeypatch.setattr(loading, "_LOADED", {})
    logitprobe.load(str(fake_gguf), device="cpu", progress=True)
    assert capfd.readouterr() == ("", "")


def test_install_replaces_a_damaged_copy_and_yields_to_a_newer_one(tmp_path, monkeypatch):
    target = tmp_path / "copy"
    target.mkdir()
    (target / "old").write_text("damaged")
    built = tmp_path / ".tmp-1"
    built.mkdir()
    (built / "new").write_text("fresh")
    assert _weights_cache.install(built, target) is True
    assert [p.name for p in target.iterdir()] == ["new"] and not built.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["copy"]
    # another process installed its copy between our check and our rename: keep theirs
    late = tmp_path / ".tmp-2"
    late.mkdir()
    (late / "other").write_text("x")
    real_replace = _weights_cache.os.replace
    calls = []

    def racing_replace(src, dst):
        calls.append(src)
        if len(calls) == 2:  # after ours moved aside, theirs lands first
            target.mkdir()
            (target / "theirs").write_text("y")
        return real_replace(src, dst)

    monkeypatch.setattr(_weights_cache.os, "replace", racing_replace)
    assert _weights_cache.install(late, target) is False
    monkeypatch.undo()
    assert [p.name for p in target.iterdir()] == ["theirs"] and not late.exists()


@settings(max_examples=60, deadline=None)
@given(files=st.dictionaries(st.sampled_from(["config.json", "model.safetensors", "tok.json"]),
                             st.binary(min_size=1, max_size=300), min_size=1),
       data=st.data())
def test_any_changed_byte_or_length_is_caught(tmp_path_factory, files, data):
    directory = tmp_path_factory.mktemp("copy")
    for name, content in files.items():
        (directory / name).write_bytes(content)
    _weights_cache.write_checksums(directory)
    assert _weights_cache.problem(directory) is None
    name = data.draw(st.sampled_from(sorted(files)))
    content = bytearray(files[name])
    kind = data.draw(st.sampled_from(["flip", "truncate", "append"]))
    if kind == "flip":
        at = data.draw(st.integers(0, len(content) - 1))
        content[at] ^= data.draw(st.integers(1, 255))
    elif kind == "truncate":
        del content[data.draw(st.integers(0, len(content) - 1)):]
    else:
        content += data.draw(st.binary(min_size=1, max_size=10))
    (directory / name).write_bytes(bytes(content))
    reason = _weights_cache.problem(directory)
    assert reason is not None and reason.startswith(name)


def test_copies_from_before_checksums_are_not_read(fake_gguf, monkeypatch):
    """A 0.1.0 copy (no checksums) lives under another name: a fresh, checked copy is made."""
    import hashlib

    stat = fake_gguf.stat()
    legacy_key = f"{fake_gguf.resolve()}:{stat.st_size}:{stat.st_mtime_ns}"
    legacy = (loading.cache_dir() / "gguf"
              / f"{fake_gguf.stem}-{hashlib.sha256(legacy_key.encode()).hexdigest()[:16]}")
    legacy.mkdir(parents=True)
    (legacy / "config.json").write_text("{}")
    fresh_load(fake_gguf, monkeypatch)
    assert loading.dequantized_dir(fake_gguf) != legacy
    assert _weights_cache.problem(loading.dequantized_dir(fake_gguf)) is None
    assert len(fake_gguf.reads) == 1


def _count_hashes(monkeypatch) -> list:
    hashed: list = []
    real = _weights_cache._sha256
    monkeypatch.setattr(_weights_cache, "_sha256", lambda p: hashed.append(p.name) or real(p))
    return hashed


def test_an_unchanged_copy_is_not_hashed_again_and_any_write_is_seen(tmp_path, monkeypatch):
    import time

    monkeypatch.delenv("LOGITPROBE_VERIFY_CACHE", raising=False)
    monkeypatch.setattr(_weights_cache, "_RACY_NS", 50_000_000)  # 50 ms instead of 2 s
    directory = tmp_path / "copy"
    directory.mkdir()
    (directory / "model.safetensors").write_bytes(bytes(range(256)) * 64)
    (directory / "config.json").write_text("{}")
    _weights_cache.write_checksums(directory)
    time.sleep(0.2)  # older than the racy window: the record is kept
    hashed = _count_hashes(monkeypatch)
    assert _weights_cache.problem(directory) is None and len(hashed) == 2
    assert (tmp_path / "copy.verified.json").is_file()
    assert sorted(p.name for p in directory.iterdir()) == sorted(
        [CHECKSUMS, "config.json", "model.safetensors"])  # the copy holds only what was written
    assert _weights_cache.problem(directory) is None and len(hashed) == 2  # a stat, no hash
    monkeypatch.setenv("LOGITPROBE_VERIFY_CACHE", "always")
    assert _weights_cache.problem(directory) is None and len(hashed) == 4
    monkeypatch.delenv("LOGITPROBE_VERIFY_CACHE")
    # Same size, same modification time put back: the status-change time still moves.
    path = directory / "model.safetensors"
    stat = path.stat()
    time.sleep(0.05)
    _overwrite(path, 1000, b"\x00")
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert _weights_cache.problem(directory) == "model.safetensors does not match its checksum"


def test_a_copy_written_just_now_is_hashed_on_every_check(tmp_path, monkeypatch):
    # Within the racy window a later write could keep every file time: no record is kept.
    monkeypatch.delenv("LOGITPROBE_VERIFY_CACHE", raising=False)
    directory = tmp_path / "copy"
    directory.mkdir()
    (directory / "model.safetensors").write_bytes(b"abc" * 100)
    _weights_cache.write_checksums(directory)
    hashed = _count_hashes(monkeypatch)
    assert _weights_cache.problem(directory) is None
    _overwrite(directory / "model.safetensors", 0, b"x")  # at once: maybe the same clock tick
    assert _weights_cache.problem(directory) == "model.safetensors does not match its checksum"
    assert len(hashed) == 2 and not (tmp_path / "copy.verified.json").exists()


def test_a_file_changed_while_another_is_hashed_is_not_recorded(tmp_path, monkeypatch):
    # config.json matched, then was rewritten while the (slow) weights were being hashed:
    # the stamp taken before hashing no longer holds, so nothing is recorded as verified.
    import time

    monkeypatch.delenv("LOGITPROBE_VERIFY_CACHE", raising=False)
    monkeypatch.setattr(_weights_cache, "_RACY_NS", 50_000_000)
    directory = tmp_path / "copy"
    directory.mkdir()
    (directory / "config.json").write_text('{"n_layer": 2}')
    (directory / "model.safetensors").write_bytes(b"w" * 4096)
    _weights_cache.write_checksums(directory)
    time.sleep(0.2)
    real = _weights_cache._sha256

    def slow_hash(path):
        digest = real(path)
        if path.name == "model.safetensors":  # hashed after config.json (sorted names)
            time.sleep(0.05)
            (directory / "config.json").write_text('{"n_layer": 1}')  # same size
        return digest

    monkeypatch.setattr(_weights_cache, "_sha256", slow_hash)
    assert _weights_cache.problem(directory) is None  # it matched when it was hashed
    monkeypatch.setattr(_weights_cache, "_sha256", real)
    assert not (tmp_path / "copy.verified.json").exists()
    assert _weights_cache.problem(directory) == "config.json does not match its checksum"
