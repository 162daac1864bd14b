"""Activation patching sweeps, built on ``transformer_lens.patching``.

TransformerLens does the sweep itself (one patched forward per cell, via
``get_act_patch_resid_pre`` and friends / ``generic_activation_patch``). What
logitprobe adds around it:

- prompts as text, tokenized with the probe's BOS policy, and a clear error
  (showing both tokenizations) when clean and corrupted differ in length,
  which TransformerLens would silently mis-align;
- the metric from token names (``logit(a) - logit(b)`` at the last position)
  with the clean and corrupted baselines, so ``normalized()`` is 1 where a
  patch restores the clean answer and 0 where it does nothing;
- a heatmap-ready result with layer / position (or head) labels, a table
  ``str()`` and :func:`~logitprobe.interventions.plots.plot_patch_sweep`;
- no progress bar on stderr (TransformerLens prints one with tqdm) unless asked for
  with ``progress=True`` (or a tqdm-like callable).

>>> sw = probe.patch_sweep("The capital of France is", "The capital of Italy is",
...                        [" Paris", " Rome"])                          # doctest: +SKIP
>>> sw.values.shape                                                     # doctest: +SKIP
torch.Size([30, 5])
"""

from __future__ import annotations

import contextlib
import difflib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Iterator, Sequence

import torch

from .. import display, records
from .._text import Table, clip, short
from ..errors import InvalidArgument, PromptError
from ..progress import check_progress, track

if TYPE_CHECKING:
    import pandas

    from ..probe import Probe

__all__ = ["ACTIVATIONS", "PatchSweep", "sweep"]

# activation -> axes of the result (after the layer axis) when patched per position / not
ACTIVATIONS = ("resid_pre", "resid_mid", "attn_out", "mlp_out", "z")


@dataclass(frozen=True, eq=False)
class PatchSweep:
    """The metric after patching each cell from the clean run into the corrupted run.

    ``values`` is ``(layer, pos)``, ``(layer,)`` (all positions at once) or
    ``(layer, head)`` (``activation='z'``); ``axes`` names them.
    """

    values: torch.Tensor
    axes: tuple[str, ...]
    activation: str
    metric: str
    clean: str
    corrupted: str
    clean_tokens: tuple[str, ...]
    corrupted_tokens: tuple[str, ...]
    clean_value: float
    corrupted_value: float

    def normalized(self) -> torch.Tensor:
        """``(values - corrupted) / (clean - corrupted)``: 1 = clean answer restored, 0 = no effect."""
        gap = self.clean_value - self.corrupted_value
        if gap == 0:
            raise InvalidArgument("the metric is the same on the clean and corrupted prompts "
                                  f"({self.clean_value:.4g}), so it cannot be normalized; "
                                  "choose prompts or tokens the model tells apart")
        return (self.values - self.corrupted_value) / gap

    def heatmap(self, *, normalized: bool = False) -> tuple[torch.Tensor, list[str], list[str]]:
        """``(matrix, row_labels, column_labels)`` with layers as rows."""
        values = self.normalized() if normalized else self.values
        rows = [f"L{i}" for i in range(values.shape[0])]
        if self.axes == ("layer",):
            return values[:, None], rows, ["all positions"]
        if self.axes[1] == "head":
            return values, rows, [f"H{j}" for j in range(values.shape[1])]
        cols = [f"{j}: {t!r}" for j, t in enumerate(self.corrupted_tokens)]
        return values, rows, cols

    def peak(self) -> tuple[int, ...]:
        """Index of the cell with the largest value (e.g. ``(layer, pos)``)."""
        flat = int(torch.argmax(self.values))
        return tuple(int(i) for i in torch.unravel_index(torch.tensor(flat), self.values.shape))

    def __repr__(self) -> str:
        return (f"PatchSweep(activation={self.activation!r}, axes={self.axes}, "
                f"shape={tuple(self.values.shape)}, clean={self.clean_value:.4g}, "
                f"corrupted={self.corrupted_value:.4g})")

    def __str__(self) -> str:
        matrix, rows, cols = self.heatmap()
        head = (f"patching {self.activation} from {self.clean!r} into {self.corrupted!r}; "
                f"{self.metric}: clean {self.clean_value:.3f}, corrupted {self.corrupted_value:.3f}")
        width = max(9, *(min(len(c), 14) for c in cols))
        table = Table(("layer", ">5"), *((clip(c, width), f">{width}.3f") for c in cols))
        return "\n".join([head, *table.header(rule=False),
                          *(table.row(r, *row) for r, row in zip(rows, matrix.tolist()))])

    # -- notebooks and data out (logitprobe.display, logitprobe.records) ------------
    def _repr_html_(self) -> str:
        return display.patch_sweep(self)

    def to_records(self) -> list[dict]:
        """One dict per cell: layer, pos (and its corrupted token) or head, value."""
        return records.patch_sweep(self)

    def to_pandas(self) -> "pandas.DataFrame":
        """``to_records()`` as a DataFrame (needs pandas)."""
        return records.to_pandas(self.to_records())


@contextlib.contextmanager
def _quiet(module: Any, progress: Any = False, desc: str = "patch_sweep") -> Iterator[None]:
    """TransformerLens wraps its sweep loop in tqdm; a library call must not print.

    With ``progress``, its loop shows logitprobe's bar instead (see :mod:`logitprobe.progress`).
    """
    original = module.tqdm

    def loop(iterable: Any, *a: Any, **k: Any) -> Any:
        if progress is False:
            return iterable
        items = list(iterable)
        return track(items, progress, total=len(items), desc=desc)

    module.tqdm = loop
    try:
        yield
    finally:
        module.tqdm = original


def _whole(corrupted: torch.Tensor, index: Sequence[int], clean: torch.Tensor) -> torch.Tensor:
    return clean.clone()  # every position of the layer


def sweep(probe: Probe, clean: str, corrupted: str, tokens: Sequence[Any] | None = None, *,
          metric: Callable[[torch.Tensor], Any] | None = None, activation: str = "resid_pre",
          per_position: bool = True, progress: Any = False) -> PatchSweep:
    """Patch ``activation`` of each layer (x position) from ``clean`` into ``corrupted``."""
    import transformer_lens.patching as tlp
    from transformer_lens.utilities import get_act_name

    if activation not in ACTIVATIONS:
        close = difflib.get_close_matches(str(activation), ACTIVATIONS, n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise InvalidArgument(f"activation={activation!r}: {hint}choose one of "
                              f"{', '.join(ACTIVATIONS)}")
    if not isinstance(per_position, bool):
        raise InvalidArgument(f"per_position={per_position!r}: must be True or False")
    progress = check_progress(progress)
    fn, name = _metric(probe, tokens, metric)
    clean_ids = probe.vocab.encode(clean, name="clean")
    corrupted_ids = probe.vocab.encode(corrupted, name="corrupted")
    if len(clean_ids) != len(corrupted_ids):
        raise PromptError(
            f"clean={clean!r} is {len(clean_ids)} tokens {probe.vocab.tokenize(clean)!r} but "
            f"corrupted={corrupted!r} is {len(corrupted_ids)} tokens "
            f"{probe.vocab.tokenize(corrupted)!r}; activation patching pairs positions, so the "
            "prompts must have the same number of tokens")
    model = probe.model
    device = probe.device
    clean_t = torch.tensor([clean_ids], device=device)
    corrupted_t = torch.tensor([corrupted_ids], device=device)
    names = [get_act_name(activation, layer) for layer in range(probe.n_layers)]

    def tl_metric(logits: torch.Tensor) -> torch.Tensor:  # (1, pos, vocab) -> scalar
        return _scalar(fn(logits[0, -1]), name)

    with probe.engine.lock, torch.no_grad():  # no other forward while its hooks are on
        clean_logits, cache = model.run_with_cache(clean_t, names_filter=names)
        clean_value = float(tl_metric(clean_logits))
        corrupted_value = float(tl_metric(model(corrupted_t)))
        with _quiet(tlp, progress, desc=f"patch_sweep {activation}"):
            if activation == "z":
                values = tlp.get_act_patch_attn_head_out_all_pos(model, corrupted_t, cache,
                                                                 tl_metric)
                axes: tuple[str, ...] = ("layer", "head")
            elif per_position:
                values = getattr(tlp, f"get_act_patch_{activation}")(model, corrupted_t, cache,
                                                                     tl_metric)
                axes = ("layer", "pos")
            else:
                values = tlp.generic_activation_patch(
                    model, corrupted_t, cache, tl_metric, patch_setter=_whole,
                    activation_name=activation, index_axis_names=("layer",))
                axes = ("layer",)
    return PatchSweep(values=values.detach().float().cpu(), axes=axes, activation=activation,
                      metric=name, clean=clean, corrupted=corrupted,
                      clean_tokens=tuple(probe.vocab.tokenize(clean)),
                      corrupted_tokens=tuple(probe.vocab.tokenize(corrupted)),
                      clean_value=clean_value, corrupted_value=corrupted_value)


def _scalar(value: Any, name: str) -> torch.Tensor:
    """The metric's value as a 0-d float32 tensor; a named error for anything else."""
    if isinstance(value, torch.Tensor):
        ok = value.numel() == 1 and not value.dtype.is_complex
    else:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not ok:
        shown = (f"a tensor of shape {tuple(value.shape)}" if isinstance(value, torch.Tensor)
                 else f"{type(value).__name__} {short(value, 60)}")
        raise InvalidArgument(f"metric={name}: returned {shown}; a patch-sweep metric must "
                              "return one number (a float or a one-element tensor), e.g. "
                              "lambda logits: logits[a] - logits[b]")
    return torch.as_tensor(value).detach().to(torch.float32).reshape(())


def _metric(probe: Probe, tokens: Any, metric: Any) -> tuple[Callable[[torch.Tensor], Any], str]:
    if metric is not None:
        if not callable(metric):
            raise InvalidArgument(f"metric={metric!r}: `metric` must be a callable taking the "
                                  "last position's logits (a [vocab] tensor) and returning a float")
        return metric, getattr(metric, "__name__", "metric")
    if isinstance(tokens, (list, tuple)) and len(tokens) == 2:
        a = probe.vocab.token_id(tokens[0], name="tokens[0]")
        b = probe.vocab.token_id(tokens[1], name="tokens[1]")
        name = f"logit({probe.vocab.decode_one(a)!r}) - logit({probe.vocab.decode_one(b)!r})"
        return (lambda logits: logits[a] - logits[b]), name
    raise InvalidArgument(f"tokens={tokens!r}: give two tokens (the clean answer first), e.g. "
                          "tokens=[' Paris', ' Rome'], or a metric=callable(logits) -> float")
