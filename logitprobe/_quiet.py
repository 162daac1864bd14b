"""Keep Hugging Face and TransformerLens quiet while logitprobe loads a model.

transformers draws a "Loading weights" progress bar on every ``from_pretrained``
(and "Writing model shards" on ``save_pretrained``) and logs warnings to stderr;
the library promises to print nothing. :func:`quiet` switches those off for one
block and restores exactly what it changed, so the user's own settings
(``transformers.logging.set_verbosity``, progress bars) are left as they were.
Nested and concurrent blocks share one switch: the first to enter saves the
settings, the last to leave restores them.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from typing import Any, Iterator

__all__ = ["quiet"]

_LOGGERS = ("transformer_lens", "huggingface_hub")
_lock = threading.Lock()
_depth = 0
_saved: dict[str, Any] = {}


def _enter() -> None:
    from huggingface_hub.utils import tqdm as hub_tqdm
    from transformers.utils import logging as tf_logging

    _saved["verbosity"] = tf_logging.get_verbosity()
    _saved["bars"] = tf_logging.is_progress_bar_enabled()
    # hub bar switches: a dict of group -> enabled (global and per group)
    _saved["hub_bars"] = dict(getattr(hub_tqdm, "progress_bar_states", {}))
    _saved["levels"] = {name: logging.getLogger(name).level for name in _LOGGERS}
    tf_logging.set_verbosity(logging.ERROR)
    tf_logging.disable_progress_bar()  # also the hub's
    for name in _LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)


def _exit() -> None:
    from huggingface_hub.utils import tqdm as hub_tqdm
    from transformers.utils import logging as tf_logging

    tf_logging.set_verbosity(_saved["verbosity"])
    if _saved["bars"]:
        tf_logging.enable_progress_bar()
    states = getattr(hub_tqdm, "progress_bar_states", None)
    if states is not None:
        states.clear()
        states.update(_saved["hub_bars"])
    for name, level in _saved["levels"].items():
        logging.getLogger(name).setLevel(level)
    _saved.clear()


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """No progress bars and only errors from transformers / TransformerLens in this block."""
    global _depth
    with _lock:
        if _depth == 0:
            _enter()
        _depth += 1
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0:
                _exit()
