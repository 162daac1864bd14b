"""Sampling and generation: seeded, KV-cached, and exactly the distributions they claim.

- ``probe.sample(prompt, n=...)``: n next tokens drawn from the warped distribution
  (one forward, however large ``n`` is).
- ``probe.sample_frequencies(prompt, n=...)``: their counts, with confidence
  intervals and a goodness-of-fit test (:mod:`logitprobe.sampling_stats`).
- ``probe.generate(prompt, max_new_tokens=...)``: a :class:`Generation` per
  sample; one prompt pass, then one cached forward per token (:mod:`.kvcache`);
  ``n`` samples of one prompt are rows of one batch.
- ``probe.steps(prompt, ...)``: the same loop, yielding ``(NextToken, Candidate)``.

Seeds (see :mod:`logitprobe.rng`): step ``t`` of sample ``i`` of prompt ``p`` uses
a random number that depends only on ``(seed, p, i, t)``. Hence
``sample(p, n=10, seed=s)[:5] == sample(p, n=5, seed=s)``; sample ``i`` of
``generate(p, n=k, seed=s, do_sample=True)`` is the same for every ``k > i``, for
every list of prompts ``p`` is in and for every ``max_new_tokens`` (up to where it
stops); and ``sample(p, n, seed=s)[i]`` is the first token of that sample. Torch's
global RNG is never used; ``seed=None`` draws a fresh seed from the OS and records
it in the result (``Generation.seed``, ``SampleFrequencies.seed``). The one caveat:
batched and unbatched forwards can differ in the last float bits, which changes a
draw only when its uniform falls within ~1e-6 of a boundary between two tokens'
cumulative probabilities (and a greedy choice only at a near-exact tie).
"""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING, Any, Iterator, NamedTuple, Sequence

import torch

from ._finite import find_nonfinite
from ._text import short
from ._validate import positive_int as _positive_int
from ._validate import prompt_list as _prompt_list
from .budget import DRAW_BYTES, KEPT_DRAW_BYTES, refuse, row_bytes, sample_bytes
from .errors import InvalidArgument
from .generation_results import Generation, GenerationStep, SampleFrequencies
from .kvcache import Decoder
from .progress import check_progress, track
from .results import NextToken
from .rng import check_seed, draw, fresh_seed, row_keys, stream_base, uniforms
from .warpers import _probabilities, build_warpers, probabilities

if TYPE_CHECKING:
    from .results import Candidate

__all__ = ["Generation", "GenerationMixin", "GenerationStep"]

SAMPLE_CHUNK = 1 << 20  # samples drawn per step of sample_frequencies (one progress update)


def _stops(stop: Any) -> tuple[str, ...]:
    if stop is None:
        return ()
    items = [stop] if isinstance(stop, str) else stop
    if not isinstance(items, (list, tuple)) or not all(isinstance(s, str) and s for s in items):
        raise InvalidArgument(f"stop={stop!r}: `stop` must be a non-empty str or a list of them "
                              "(e.g. stop='\\n')")
    return tuple(items)


def _short(value: Any, width: int = 40) -> str:
    return short(value, width)  # the one helper, with this module's width


class _Step(NamedTuple):
    t: int  # 0-based step
    logits: torch.Tensor  # (rows, vocab) float32: the distribution the choice came from
    ids: list[int]  # chosen token per row
    logprobs: list[float]  # unwarped
    ranks: list[int]  # unwarped, 1-based
    warped: list[float]
    active: list[bool]  # rows still generating at this step


def _logsumexp(logits: torch.Tensor, peak: torch.Tensor) -> torch.Tensor:
    """``logits.logsumexp(-1)`` given ``peak = logits.amax(-1)``: torch's own steps, bit for bit.

    (``aten::logsumexp`` is amax with infinite maxima taken as 0, then ``(x - max).exp_()``
    summed, logged, plus that max; tests/test_generation.py checks the equality.)
    """
    m = peak.masked_fill(peak.abs() == float("inf"), 0)
    return (logits - m[:, None]).exp_().sum(-1).log_().add_(m)


class GenerationMixin:
    """Probe methods for sampling and generation (mixed into :class:`logitprobe.Probe`)."""

    # -- arguments ---------------------------------------------------------------------
    def _warpers(self, do_sample: bool, temperature: Any, top_k: Any, top_p: Any,
                 min_p: Any) -> Any:

        if not isinstance(do_sample, bool):
            raise InvalidArgument(f"do_sample={do_sample!r}: `do_sample` must be True or False")
        if not do_sample:
            given = {k: v for k, v in dict(temperature=temperature, top_k=top_k, top_p=top_p,
                                           min_p=min_p).items()
                     if v is not None and not (k == "temperature" and v == 1.0)}
            if given:
                name, value = next(iter(given.items()))
                raise InvalidArgument(f"{name}={value!r}: warpers only apply when sampling; "
                                      "pass do_sample=True, or drop it for greedy decoding")
        return build_warpers(temperature=1.0 if temperature is None else temperature,
                             top_k=top_k, top_p=top_p, min_p=min_p, do_sample=do_sample)

    def _encode_for_generation(self, prompts: list[str], max_new_tokens: Any) -> list[list[int]]:
        max_new_tokens = _positive_int(max_new_tokens, "max_new_tokens", "e.g. max_new_tokens=20")
        seqs = [self.vocab.encode(p) for p in prompts]
        n_ctx = self.n_ctx
        if n_ctx is not None:
            longest = max(range(len(seqs)), key=lambda i: len(seqs[i]))
            room = n_ctx - len(seqs[longest])
            if room < 1:
                raise InvalidArgument(
                    f"max_new_tokens={max_new_tokens!r}: the prompt {_short(prompts[longest])} "
                    f"has {len(seqs[longest])} tokens and already fills the model's context of "
                    f"{n_ctx}; shorten it to leave room for new tokens")
            if max_new_tokens > room:
                raise InvalidArgument(
                    f"max_new_tokens={max_new_tokens!r}: the prompt {_short(prompts[longest])} has "
                    f"{len(seqs[longest])} tokens and the model's context is {n_ctx}, so at most "
                    f"{room} new tokens fit (try max_new_tokens={max(room, 1)})")
        return seqs

    def _check_generation_memory(self, prompts: list[str], seqs: list[list[int]], n: int,
                                 max_new_tokens: int, do_sample: bool) -> None:
        """Refuse a generation whose estimated peak memory exceeds ``max_call_bytes``."""
        per_row = row_bytes(self.backend.cfg, prompt_tokens=max(map(len, seqs)),
                            new_tokens=max_new_tokens, vocab_size=self.vocab_size)
        need, limit = len(prompts) * n * per_row, self.max_call_bytes
        if need > limit:
            who = "1 prompt" if len(prompts) == 1 else f"{len(prompts)} prompts"
            raise refuse(need, limit, name="n", value=n, most=limit // (per_row * len(prompts)),
                         what=f"generating {max_new_tokens} tokens for {len(prompts) * n:,} rows "
                              f"({who} x n={n:,})",
                         note=" (each with its own seed)" if do_sample else "",
                         other=f" with {who} and max_new_tokens={max_new_tokens}; pass fewer "
                               "prompts per call or a smaller max_new_tokens")

    def _check_sample_memory(self, n: int, prompts: int, note: str) -> None:
        """Refuse drawing ``n`` samples above ``max_call_bytes``.

        ``prompts``: how many prompts' draws the result keeps (0: only counts are kept).
        """
        need, limit = sample_bytes(n, prompts), self.max_call_bytes
        if need > limit:
            each = f" for each of {prompts} prompts" if prompts > 1 else ""
            raise refuse(need, limit, name="n", value=n, note=note,
                         most=limit // (DRAW_BYTES + prompts * KEPT_DRAW_BYTES),
                         what=f"drawing {n:,} samples{each}")

    def _eos_ids(self) -> set[int]:
        ids = set()
        eos = getattr(self.tokenizer, "eos_token_id", None)
        if eos is not None:
            ids.add(int(eos))
        config = getattr(self.backend.original, "generation_config", None)
        extra = getattr(config, "eos_token_id", None)
        if extra is not None:
            ids.update(int(e) for e in ([extra] if isinstance(extra, int) else extra))
        return ids

    # -- the loop ----------------------------------------------------------------------
    def _decode(self, prompts: list[str], seqs: list[list[int]], *, n: int,
                max_new_tokens: int, warpers: Any, do_sample: bool, seed: int,
                stop: tuple[str, ...], stop_at_eos: bool, intervention: Any) -> Iterator[_Step]:
        """Generate for ``len(seqs) * n`` rows (prompt-major); yield every step."""

        decoder = Decoder(self.backend, pad_id=self.engine.pad_id, intervention=intervention,
                          stats=self.engine.stats, lock=self.engine.lock)
        logits = decoder.prefill(seqs, repeats=n)  # (rows, vocab)
        rows = logits.shape[0]
        peak = logits.amax(-1)  # (rows,): the finiteness check's one pass, reused by _logsumexp
        self._check_finite(logits, peak, None, lambda r: list(seqs[r // n]), intervention)
        keys = cdf = None
        if do_sample:  # prompt-major rows: prompt j's samples 0..n-1
            keys = torch.cat([row_keys(stream_base(seed, p), torch.arange(n)) for p in prompts])
            cdf = torch.empty(logits.shape, dtype=torch.float64, device=logits.device)
        eos = self._eos_ids() if stop_at_eos else set()
        active = [True] * rows
        generated: list[list[int]] = [[] for _ in range(rows)]
        for t in range(max_new_tokens):
            if do_sample:
                # Every row was checked when all are active: no second non-finite check.
                probs = _probabilities(logits, warpers, finite=all(active))
                chosen = draw(probs, uniforms(keys, t).to(probs.device), out=cdf)
                warped = probs.gather(1, chosen[:, None]).squeeze(1).float().tolist()
            else:
                chosen = logits.argmax(-1)  # lowest id among exact ties, as HF
                warped = [1.0] * rows
            picked = logits.gather(1, chosen[:, None])  # (rows, 1)
            logprobs = (picked.squeeze(1) - _logsumexp(logits, peak)).tolist()
            ranks = ((logits > picked).sum(-1, dtype=torch.int32) + 1).tolist()  # int32: 1.8x faster
            ids = chosen.tolist()
            yield _Step(t, logits, ids, logprobs, ranks, warped, list(active))
            for r in range(rows):
                if not active[r]:
                    continue
                generated[r].append(ids[r])
                if ids[r] in eos or (stop and self._hit_stop(generated[r], stop) is not None):
                    active[r] = False
            if t == max_new_tokens - 1 or not any(active):
                break
            feed = torch.tensor([i if a else self.engine.pad_id for i, a in zip(ids, active)])
            logits = decoder.step(feed)
            peak = logits.amax(-1)
            self._check_finite(logits, peak, active,
                               lambda r: list(seqs[r // n]) + generated[r], intervention)
        check = getattr(intervention, "check_fired", None)
        if callable(check):
            check()

    def _check_finite(self, logits: torch.Tensor, peak: torch.Tensor, active: list[bool] | None,
                      tokens: Any, intervention: Any) -> None:
        """NonFiniteLogitsError when an active row's logits are NaN / +inf / all -inf.

        ``peak`` is ``logits.amax(-1)``; ``active[r]`` False: row r has finished and its
        logits are unused (None: all active); ``tokens(r)`` is row r's tokens so far,
        built only for the error.
        """
        bad = find_nonfinite(logits[:, None], best=peak[:, None])  # no pass of its own
        if bad is None:
            return
        live = [r for r in range(logits.shape[0]) if active is None or active[r]]
        bad = find_nonfinite(logits[live][:, None]) if len(live) < logits.shape[0] else bad
        if bad is None:
            return
        raise self.engine.nonfinite_error(bad, tokens(live[bad.row]), 1, intervention)

    def _hit_stop(self, ids: list[int], stop: tuple[str, ...]) -> str | None:
        text = self.vocab.decode(ids)
        return next((s for s in stop if s in text), None)

    # -- public ------------------------------------------------------------------------
    def generate(self, prompt: str | Sequence[str], *, max_new_tokens: int = 20,
                 do_sample: bool = False, temperature: float | None = None,
                 top_k: int | None = None, top_p: float | None = None,
                 min_p: float | None = None, n: int = 1, seed: int | None = None,
                 stop: str | Sequence[str] | None = None, stop_at_eos: bool = True,
                 interventions: Any = None, progress: Any = False) -> Generation | list[Generation]:
        """Continue ``prompt`` token by token with a KV cache; greedy unless ``do_sample``.

        One str prompt and ``n=1`` give a :class:`Generation`; otherwise a list,
        prompt-major (prompt 0's n samples, then prompt 1's, ...). Greedy decoding
        matches Hugging Face ``generate(do_sample=False)`` token for token.
        ``progress=True`` (or a tqdm-like callable) shows a bar over the new tokens.

        >>> probe.generate("The capital of France is", max_new_tokens=3).text  # doctest: +SKIP
        ' Paris.\\n'
        """

        warpers = self._warpers(do_sample, temperature, top_k, top_p, min_p)
        single = isinstance(prompt, str)
        prompts = [prompt] if single else _prompt_list(prompt)
        n = _positive_int(n, "n", "the number of samples per prompt, e.g. n=8")
        stops = _stops(stop)
        seed = fresh_seed() if seed is None else check_seed(seed)
        if not isinstance(stop_at_eos, bool):
            raise InvalidArgument(f"stop_at_eos={stop_at_eos!r}: must be True or False")
        progress = check_progress(progress)
        seqs = self._encode_for_generation(prompts, max_new_tokens)
        self._check_generation_memory(prompts, seqs, n, max_new_tokens, do_sample)
        intervention = self._compile_interventions(interventions)
        rows = len(prompts) * n
        ids: list[list[int]] = [[] for _ in range(rows)]
        steps: list[list[GenerationStep]] = [[] for _ in range(rows)]
        decode = self._decode(prompts, seqs, n=n, max_new_tokens=max_new_tokens, warpers=warpers,
                              do_sample=do_sample, seed=seed, stop=stops,
                              stop_at_eos=stop_at_eos, intervention=intervention)
        for step in track(decode, progress, total=max_new_tokens, desc="generate"):
            for r in range(rows):
                if step.active[r]:
                    tid = step.ids[r]
                    ids[r].append(tid)
                    steps[r].append(GenerationStep(
                        token=self.vocab.decode_one(tid), id=tid, logprob=step.logprobs[r],
                        rank=step.ranks[r], warped_prob=step.warped[r]))
        eos = self._eos_ids() if stop_at_eos else set()
        out = []
        for r in range(rows):
            hit = self._hit_stop(ids[r], stops) if stops else None
            reason = "stop" if hit else "eos" if ids[r] and ids[r][-1] in eos else "length"
            out.append(Generation(prompt=prompts[r // n], text=self.vocab.decode(ids[r]),
                                  token_ids=tuple(ids[r]), steps=tuple(steps[r]),
                                  stop_reason=reason, stop_string=hit,
                                  seed=seed if do_sample else None, index=r % n))
        return out[0] if single and n == 1 else out

    def steps(self, prompt: str, *, max_new_tokens: int = 20, do_sample: bool = False,
              temperature: float | None = None, top_k: int | None = None,
              top_p: float | None = None, min_p: float | None = None, seed: int | None = None,
              stop: str | Sequence[str] | None = None, stop_at_eos: bool = True,
              interventions: Any = None) -> Iterator[tuple["NextToken", "Candidate"]]:
        """Generate like :meth:`generate`, yielding each step's ``(NextToken, chosen)``.

        The ``NextToken`` is the model's (unwarped) distribution after the text so
        far; ``chosen`` is the token picked from it (as a ``Candidate``: rank and
        probability under that distribution). Uses the same KV cache and seeds as
        ``generate``: the chosen tokens are ``generate(...)``'s tokens.

        >>> steps = probe.steps("The capital of France is", max_new_tokens=2)  # doctest: +SKIP
        >>> for dist, tok in steps:                                            # doctest: +SKIP
        ...     print(repr(tok.token), tok.rank, dist.top(3).tokens)
        ' Paris' 1 [' Paris', ' the', ' London']
        '.' 1 ['.', ',', ' and']
        """

        if not isinstance(prompt, str):
            raise InvalidArgument(f"prompt={prompt!r}: steps() takes one str prompt")
        warpers = self._warpers(do_sample, temperature, top_k, top_p, min_p)
        stops = _stops(stop)
        seed = fresh_seed() if seed is None else check_seed(seed)
        if not isinstance(stop_at_eos, bool):
            raise InvalidArgument(f"stop_at_eos={stop_at_eos!r}: must be True or False")
        seqs = self._encode_for_generation([prompt], max_new_tokens)
        intervention = self._compile_interventions(interventions)
        return self._steps(prompt, seqs[0], max_new_tokens=max_new_tokens, warpers=warpers,
                           do_sample=do_sample, seed=seed, stop=stops, stop_at_eos=stop_at_eos,
                           intervention=intervention, next_token=NextToken)

    def _steps(self, prompt: str, ids: list[int], *, next_token: type, **kw: Any):
        # A separate generator so steps() validates its arguments when called.
        ids = list(ids)
        generated: list[int] = []
        for step in self._decode([prompt], [ids], n=1, **kw):
            dist = next_token(step.logits[0].cpu(), vocab=self.vocab,
                              prompt=prompt + self.vocab.decode(generated) if generated else prompt,
                              token_ids=ids, position=len(ids) - 1)
            tid = step.ids[0]
            yield dist, dist._candidate(tid, step.ranks[0])
            ids = ids + [tid]
            generated.append(tid)

    def sample(self, prompt: str | Sequence[str], n: int = 1, *,
               temperature: float | None = None, top_k: int | None = None,
               top_p: float | None = None, min_p: float | None = None,
               seed: int | None = None,
               interventions: Any = None) -> list["Candidate"] | list[list["Candidate"]]:
        """``n`` next tokens drawn from the warped next-token distribution (one forward).

        Each is a ``Candidate`` with its unwarped probability and rank. Draw ``i``
        depends only on ``(seed, i)``: ``sample(p, 10, seed=0)[:5] == sample(p, 5, seed=0)``.

        >>> [c.token for c in probe.sample("I like oat milk in my", 3, seed=0)]  # doctest: +SKIP
        [' diet', ' morning', ' coffee']
        """

        warpers = self._warpers(True, temperature, top_k, top_p, min_p)
        n = _positive_int(n, "n", "the number of samples, e.g. n=100")
        seed = fresh_seed() if seed is None else check_seed(seed)
        single = isinstance(prompt, str)
        prompts = [prompt] if single else _prompt_list(prompt)
        self._check_sample_memory(n, len(prompts), " with a different seed for each (draw i of "
                                  "a call depends only on (seed, i))")
        dists = self.next_token(prompts, interventions=interventions)
        out = []
        for p, dist in zip(prompts, dists):
            u = uniforms(row_keys(stream_base(seed, p), torch.arange(n)), 0)
            probs = probabilities(dist.logits[None], warpers)[0]  # (vocab,)
            ids = draw(probs, u).tolist()
            cands = {tid: dist._candidate(tid) for tid in set(ids)}  # one per distinct token
            out.append([cands[tid] for tid in ids])
        return out[0] if single else out

    def sample_frequencies(self, prompt: str, n: int = 1000, *,
                           temperature: float | None = None, top_k: int | None = None,
                           top_p: float | None = None, min_p: float | None = None,
                           seed: int | None = None, interventions: Any = None,
                           progress: Any = False) -> SampleFrequencies:
        """Counts of ``n`` sampled next tokens, with the warped probabilities they estimate.

        ``progress=True`` (or a tqdm-like callable) shows a bar over the samples (drawn in
        chunks of ``SAMPLE_CHUNK``; draw ``i`` depends only on ``(seed, i)``, so chunking does
        not change them).

        >>> freq = probe.sample_frequencies("I like oat milk in my", 2000, seed=0)  # doctest: +SKIP
        >>> freq.check(" coffee", at_least=0.1).passed                            # doctest: +SKIP
        True
        """

        if not isinstance(prompt, str):
            raise InvalidArgument(f"prompt={prompt!r}: sample_frequencies() takes one str prompt")
        warpers = self._warpers(True, temperature, top_k, top_p, min_p)
        n = _positive_int(n, "n", "the number of samples, e.g. n=1000")
        seed = fresh_seed() if seed is None else check_seed(seed)
        progress = check_progress(progress)
        self._check_sample_memory(n, 0, " with a different seed for each, and add the counts")
        dist = self.next_token(prompt, interventions=interventions)
        probs = probabilities(dist.logits[None], warpers)[0]
        base = stream_base(seed, prompt)
        counts: Counter = Counter()
        chunks = [(lo, min(n, lo + SAMPLE_CHUNK)) for lo in range(0, n, SAMPLE_CHUNK)]
        for lo, hi in track(chunks, progress, total=len(chunks), desc="sample_frequencies"):
            counts.update(draw(probs, uniforms(row_keys(base, torch.arange(lo, hi)), 0)).tolist())
        return SampleFrequencies(counts, n, probs=probs.float().cpu(), vocab=self.vocab,
                                 prompt=prompt, seed=seed)

