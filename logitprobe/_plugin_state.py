"""The pytest plugin's per-session state: settings, loaded probes, load failures.

Its own module so that the plugin and the YAML items (:mod:`logitprobe._yaml_items`)
both import it at their top without importing each other. Imports no torch.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import pytest

__all__ = ["STATE", "Settings", "State"]

DTYPES = ("float32", "float16", "bfloat16", "float64")
DEVICE = re.compile(r"^(auto|cpu|mps|meta|(cuda|xpu|npu|hpu)(:\d+)?)$")
MARKER_ARGS = ("model", "device", "dtype")


@dataclass(frozen=True)
class Settings:
    model: str
    device: str | None  # None: let logitprobe.load choose (cuda when available)
    dtype: str
    skip_unavailable: bool


@dataclass
class _Failure:
    message: str
    unavailable: bool  # a ModelUnavailableError (skippable), not a bug
    reported: bool = False


@dataclass
class State:
    """Per-session plugin state (in ``config.stash``): loaded probes and load failures."""

    settings: Settings
    probes: dict[tuple, Any] = field(default_factory=dict)
    failures: dict[tuple, _Failure] = field(default_factory=dict)

    def key_for(self, marker: Any = None, model: str | None = None) -> tuple[str, str | None, str]:
        """``(model, device, dtype)``: marker beats ``model`` (a YAML file's) beats options."""
        chosen = {"model": model}
        if marker is not None:
            if len(marker.args) > 1 or (marker.args and "model" in marker.kwargs):
                pytest.fail("@pytest.mark.logitprobe: give the model once, e.g. "
                            "@pytest.mark.logitprobe(model='smollm2')", pytrace=False)
            unknown = sorted(set(marker.kwargs) - set(MARKER_ARGS))
            if unknown:
                pytest.fail(f"@pytest.mark.logitprobe: unknown argument(s) {', '.join(unknown)}; "
                            f"it takes {', '.join(MARKER_ARGS)}", pytrace=False)
            chosen.update(marker.kwargs)
            if marker.args:
                chosen["model"] = marker.args[0]
        s = self.settings
        dtype = chosen.get("dtype") or s.dtype
        device = chosen.get("device") or s.device
        try:
            _check_dtype(dtype, "dtype")
            _check_device(device, "device")
        except pytest.UsageError as exc:
            pytest.fail(f"@pytest.mark.logitprobe: {exc}", pytrace=False)
        return str(chosen.get("model") or s.model), None if device == "auto" else device, dtype

    def get(self, key: tuple[str, str | None, str]) -> Any:
        """The probe for ``key``, loaded once; a failed load fails (or skips) with one message."""
        __tracebackhide__ = True
        if key in self.probes:
            return self.probes[key]
        failure = self.failures.get(key)
        if failure is None:
            failure = self._load(key)
            if failure is None:
                return self.probes[key]
        model = key[0]
        if failure.unavailable and self.settings.skip_unavailable:
            first = failure.message.splitlines()[0].split(". ")[0]
            pytest.skip(f"logitprobe: model {model!r} is unavailable: {first}")
        if failure.reported:
            pytest.fail(f"logitprobe: model {model!r} could not be loaded (the first test that "
                        "needed it shows why)", pytrace=False)
        failure.reported = True
        hint = ("" if not failure.unavailable else
                "\n(--logitprobe-skip-unavailable skips the tests that need it instead)")
        pytest.fail(f"logitprobe: cannot load model {model!r}:\n{failure.message}{hint}",
                    pytrace=False)

    def _load(self, key: tuple[str, str | None, str]) -> _Failure | None:
        import logitprobe
        import torch
        from logitprobe.distributed import worker_device

        model, device, dtype = key
        try:
            # Under pytest-xdist with device auto: worker gwN on cuda:{N % GPUs}, one model per GPU
            self.probes[key] = logitprobe.load(model, device=worker_device(device),
                                               dtype=getattr(torch, dtype))
            return None
        except logitprobe.ModelUnavailableError as exc:
            failure = _Failure(str(exc), unavailable=True)
        except Exception as exc:  # noqa: BLE001 - any load failure is reported once
            import traceback

            text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
            failure = _Failure(text.rstrip(), unavailable=False)
        self.failures[key] = failure
        return failure


STATE = pytest.StashKey[State]()


def _check_dtype(value: str, name: str) -> None:
    if value not in DTYPES:
        raise pytest.UsageError(f"{name}={value!r}: must be one of {', '.join(DTYPES)}")


def _check_device(value: str | None, name: str) -> None:
    if value is not None and not DEVICE.match(value):
        raise pytest.UsageError(f"{name}={value!r}: must be auto, cpu, cuda, cuda:N or mps")
