"""Progress bars for calls that run many forwards (opt-in: ``progress=True``).

Library calls are silent by default. ``progress=True`` shows a ``tqdm.auto`` bar
(a widget in Jupyter, text on stderr in a terminal); ``progress=`` may also be
any tqdm-like callable, called as ``progress(total=..., desc=...)`` and returning
an object with ``update(n)`` and ``close()``, e.g.
``functools.partial(tqdm.tqdm, file=sys.stdout)``.

tqdm is imported lazily, on the first bar shown (it comes with transformers;
``import logitprobe`` must stay light).

>>> with bar(False, total=3, desc="forwards") as b:   # silent: the default
...     b.update(3)
"""

from __future__ import annotations

import contextlib
from typing import Any, Iterable, Iterator

from ._text import short
from .errors import InvalidArgument

__all__ = ["bar", "check_progress", "iterate", "track"]


class _Silent:
    """The bar shown when none is asked for."""

    def update(self, n: int = 1) -> None:
        pass

    def close(self) -> None:
        pass


def check_progress(progress: Any, name: str = "progress") -> Any:
    """``progress`` as given, or InvalidArgument when it is neither a bool nor a callable."""
    if isinstance(progress, bool) or (progress is not None and callable(progress)):
        return progress
    if progress is None:
        return False
    raise InvalidArgument(f"{name}={short(progress, 60)}: `{name}` must be True, False or a "
                          "tqdm-like callable (e.g. progress=tqdm.tqdm)")


@contextlib.contextmanager
def bar(progress: Any, *, total: int, desc: str) -> Iterator[Any]:
    """A progress bar of ``total`` steps (a silent one unless ``progress`` asks for it)."""
    progress = check_progress(progress)
    if progress is False:
        yield _Silent()
        return
    if progress is True:
        from tqdm.auto import tqdm  # lazy: only when a bar is asked for

        shown = tqdm(total=total, desc=desc, leave=False)
    else:
        shown = progress(total=total, desc=desc)
    try:
        yield shown
    finally:
        shown.close()


def iterate(items: Iterable[Any], shown: Any) -> Iterator[Any]:
    """``items``, one ``shown.update(1)`` after each."""
    for item in items:
        yield item
        shown.update(1)


def track(items: Iterable[Any], progress: Any, *, total: int, desc: str) -> Iterator[Any]:
    """``items`` with a bar of ``total`` steps, closed when the loop ends (or is dropped)."""
    with bar(progress, total=total, desc=desc) as shown:
        yield from iterate(items, shown)


