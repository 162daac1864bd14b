"""How a Probe applies interventions: the ``interventions=`` keyword, blocks, comparisons, sweeps.

>>> spec = SetLogit(" coffee", to="max+10")                            # doctest: +SKIP
>>> probe.next_token("The capital of France is", interventions=[spec]).argmax.token  # doctest: +SKIP
' coffee'
>>> with probe.intervene(spec):                                        # doctest: +SKIP
...     probe.next_token("The capital of France is").argmax.token
' coffee'
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any, Callable, Iterator, Sequence

from ..errors import InvalidArgument
from ..tokens import check_k
from .compare import Comparison
from .compile import Interventions, compile_specs
from .patching import PatchSweep, sweep
from .serialize import coerce

if TYPE_CHECKING:
    from ..probe import Probe

__all__ = ["InterventionMixin", "close_scope", "open_scope"]


def open_scope(probe: Probe) -> Interventions | None:
    """The interventions of the ``intervene`` blocks open in this context, or None."""
    return probe._intervention_state.scope.get()


def close_scope(probe: Probe) -> None:
    """Close every ``intervene`` block open in this context (the pytest plugin's cleanup)."""
    probe._intervention_state.scope.set(None)


class InterventionMixin:
    """Probe methods for interventions."""

    next_token: Callable[..., Any]  # Probe.next_token, which compare() calls twice

    def _compile_interventions(self, interventions: Any) -> Interventions | None:
        """An engine ``Intervention`` for ``interventions`` (plus any ``intervene`` block), or None.

        Accepts None, a spec, a mapping, a list of those, the path of a YAML/JSON
        file, or an already compiled :class:`Interventions`. Every spec is
        validated against the model before anything is built.
        """
        scope: Interventions | None = open_scope(self)
        if isinstance(interventions, Interventions):
            compiled: Interventions | None = interventions
            if scope is not None and interventions.plans[:len(scope.plans)] == scope.plans:
                return interventions  # compiled inside this block already
        else:
            specs = coerce(interventions)
            compiled = compile_specs(self, specs) if specs else None
        if scope is None:
            return compiled
        return scope if compiled is None else scope + compiled

    @contextlib.contextmanager
    def intervene(self, *interventions: Any) -> Iterator[Interventions]:
        """Apply ``interventions`` to every query of this probe inside the ``with`` block.

        Validates everything on entry (an invalid spec raises before the block
        runs). Hooks are attached around each forward only, so nothing stays on
        the model between queries, after the block, or after an exception.
        Blocks nest (outer specs first). Yields the compiled specs, whose
        ``fired`` counts the forwards each spec changed inside the block.
        The block applies to the queries of the thread (or asyncio task) that
        opened it; other threads' queries on the same probe are not intervened.
        """
        specs = coerce(list(interventions))
        if not specs:
            raise InvalidArgument("intervene(): give at least one spec, e.g. "
                                  "probe.intervene(SetLogit(' coffee', to='max+10'))")
        compiled = compile_specs(self, specs)
        var = self._intervention_state.scope
        previous = var.get()
        var.set(compiled if previous is None else previous + compiled)
        try:
            yield compiled
        finally:
            var.set(previous)

    def compare(self, prompt: str, interventions: Any, *, tokens: Sequence[Any] = (),
                k: int = 10, position: int = -1) -> Comparison:
        """Next-token predictions before and after ``interventions``, side by side.

        ``tokens`` are followed by name (rank, probability and logit changes); with
        two of them, ``logit_diff`` is ``logit(tokens[0]) - logit(tokens[1])``.
        """
        specs = coerce(interventions)
        if not specs:
            raise InvalidArgument(f"interventions={interventions!r}: compare() needs at least one "
                                  "spec to compare against the unedited model")
        if isinstance(tokens, (str, int)):
            tokens = [tokens]
        ids = tuple(self.vocab.token_id(t, name=f"tokens[{i}]") for i, t in enumerate(tokens))
        k = check_k(k, self.vocab_size)
        compiled = self._compile_interventions(specs)  # validate before any forward
        before = self.next_token(prompt, position=position)
        after = self.next_token(prompt, position=position, interventions=compiled)
        return Comparison(prompt=prompt, before=before, after=after, token_ids=ids, k=k,
                          specs=specs)

    def patch_sweep(self, clean: str, corrupted: str, tokens: Sequence[Any] | None = None, *,
                    metric: Any = None, activation: str = "resid_pre",
                    per_position: bool = True, progress: Any = False) -> PatchSweep:
        """Patch each layer (x position) from ``clean`` into ``corrupted``; measure a metric.

        The metric is ``logit(tokens[0]) - logit(tokens[1])`` at the last position,
        or ``metric(logits)`` for a callable on the last position's logits
        (``Float[Tensor, "vocab"]`` -> float). See :func:`logitprobe.interventions.patching.sweep`.
        ``progress=True`` (or a tqdm-like callable) shows a bar over the patched forwards.
        """
        return sweep(self, clean, corrupted, tokens, metric=metric, activation=activation,
                     per_position=per_position, progress=progress)
