"""The :class:`Probe`: ask a TransformerLens model about its next token."""

from __future__ import annotations

import copy
from typing import Any, Sequence, Union, overload

import torch

from ._boot import Deferred, defer
from ._text import short
from ._validate import position as _position
from ._validate import prompt_list as _prompt_list
from .backends import backend_for
from .budget import DEFAULT_MAX_CALL_BYTES, check_limit
from .engine import Engine, Stats
from .errors import InvalidArgument, PromptError
from .generation import GenerationMixin
from .interventions.state import InterventionState
from .interventions.use import InterventionMixin
from .lens import LensMixin
from .progress import bar, check_progress
from .results import NextToken, Score, TokenScore, log_softmax
from .tokens import Vocabulary

__all__ = ["Probe"]

Prompt = str
TokenLike = Union[str, int]


class Probe(GenerationMixin, InterventionMixin, LensMixin):
    """A language model, ready for questions about its next-token predictions.

    Wraps a TransformerLens ``TransformerBridge`` (or a TransformerLens 3.x
    ``HookedTransformer``, or a Hugging Face causal LM, which is copied before
    a bridge is booted on it, so the caller's object is never changed).
    Usually made by :func:`logitprobe.load`.

    >>> probe = logitprobe.load("smollm2")                    # doctest: +SKIP
    >>> " coffee" in probe.next_token("I like oat milk in my").top(5)  # doctest: +SKIP
    True
    """

    def __init__(self, model: Any, tokenizer: Any = None, *, prepend_bos: bool | None = None,
                 name: str | None = None, cache_bytes: int = 512 * 1024 * 1024,
                 max_batch_tokens: int = 4096, max_call_bytes: int = DEFAULT_MAX_CALL_BYTES):
        self.max_call_bytes = max_call_bytes
        if _is_hf_model(model):
            model = _boot_copy(model, tokenizer)
        self.backend = backend_for(model)
        if tokenizer is None and not isinstance(model, Deferred):
            tokenizer = getattr(model, "tokenizer", None)
        self.tokenizer = tokenizer
        if self.tokenizer is None:
            raise InvalidArgument("tokenizer=None: this model carries no tokenizer; pass one, "
                                  "e.g. Probe(model, tokenizer=AutoTokenizer.from_pretrained(...))")
        self.name = name or getattr(self.backend.cfg, "model_name", None) or type(model).__name__
        if prepend_bos is None and getattr(self.tokenizer, "bos_token_id", None) is not None:
            # A HookedTransformer: BOS as model.to_tokens adds it (cfg.default_prepend_bos).
            prepend_bos = getattr(self.backend, "default_prepend_bos", None)
        self.vocab = Vocabulary(self.tokenizer, vocab_size=self.backend.vocab_size,
                                n_ctx=self.backend.n_ctx, prepend_bos=prepend_bos)
        pad = self.tokenizer.pad_token_id
        if pad is None:
            pad = self.tokenizer.eos_token_id if self.tokenizer.eos_token_id is not None else 0
        self.engine = Engine(self.backend, pad_id=int(pad), cache_bytes=cache_bytes,
                             max_batch_tokens=max_batch_tokens)
        self.engine.decode = self.vocab.decode  # names the prompt in NonFiniteLogitsError
        self._intervention_state = InterventionState()  # intervene blocks, hook facts, references

    def __deepcopy__(self, memo: dict) -> "Probe":
        """A new probe on a deep copy of the model: same settings, its own (empty) cache.

        The engine's lock and the ``intervene`` scope belong to one model and cannot be
        copied, so the copy is rebuilt rather than cloned field by field.
        """
        backend = self.backend
        with backend.lock:  # not while another thread boots the bridge
            model = (copy.deepcopy(backend.model, memo) if backend.booted else
                     Deferred(copy.deepcopy(backend.module, memo), backend.boot_plan, backend.cfg))
        copied = Probe(model, self.tokenizer,
                       prepend_bos=self.vocab.prepend_bos, name=self.name,
                       cache_bytes=self.engine.cache_bytes,
                       max_batch_tokens=self.engine.max_batch_tokens,
                       max_call_bytes=self.max_call_bytes)
        memo[id(self)] = copied
        return copied

    # -- facts -----------------------------------------------------------------------
    @property
    def model(self) -> Any:
        """The TransformerLens model: a ``TransformerBridge`` (or a 3.x ``HookedTransformer``).

        A probe from :func:`logitprobe.load` boots the bridge on first use of this
        attribute, of a hook, an intervention or the lens; queries without any run the
        plain Hugging Face model it wraps (the same logits) and never need it.
        """
        return self.backend.model

    @property
    def max_call_bytes(self) -> int:
        """The most memory one ``sample``/``generate`` call may need (estimated before it runs).

        A call estimated to need more raises :class:`InvalidArgument` saying how to
        split it; raise the limit (``probe.max_call_bytes = 64 * 2**30``) on a machine
        that has the memory. Default: ``logitprobe.budget.DEFAULT_MAX_CALL_BYTES`` (8 GiB).
        """
        return self._max_call_bytes

    @max_call_bytes.setter
    def max_call_bytes(self, value: int) -> None:
        self._max_call_bytes = check_limit(value)

    @property
    def stats(self) -> Stats:
        """Forwards, tokens and cache hits so far (``probe.stats.reset()`` zeroes them)."""
        return self.engine.stats

    @property
    def device(self) -> torch.device:
        return self.backend.device

    @property
    def vocab_size(self) -> int:
        return self.backend.vocab_size

    @property
    def n_ctx(self) -> int | None:
        return self.backend.n_ctx

    @property
    def n_layers(self) -> int:
        return self.backend.n_layers

    @property
    def prepend_bos(self) -> bool | None:
        return self.vocab.prepend_bos

    def clear_cache(self) -> None:
        """Forget cached forward results and rebuild the plain twin (the stats are kept).

        Edits the library sees (in-place ops, replaced parameters, ``load_state_dict``)
        clear the cache by themselves; call this after writing weights through
        ``.data`` (``w.data.zero_()``), which no check can see.
        """
        with self.engine.lock:
            self.engine.clear_cache()
            self.backend.refresh()

    def __repr__(self) -> str:
        return (f"Probe(name={self.name!r}, layers={self.n_layers}, vocab_size={self.vocab_size}, "
                f"device={str(self.device)!r})")

    # -- tokens ----------------------------------------------------------------------
    def token_id(self, token: TokenLike) -> int:
        """The id of one token: ``probe.token_id(" coffee")``."""
        return self.vocab.token_id(token)

    def encode(self, text: str) -> list[int]:
        """Token ids of a prompt, as every query tokenizes it (BOS policy included)."""
        return self.vocab.encode(text, name="text", allow_empty=True)

    def tokenize(self, text: str) -> list[str]:
        """Token strings of a prompt: ``['I', ' like', ' oat', ' milk', ' in', ' my']``."""
        return self.vocab.tokenize(text)

    def decode(self, ids: Sequence[int] | int | torch.Tensor) -> str:
        if isinstance(ids, torch.Tensor):
            ids = ids.flatten().tolist()
        return self.vocab.decode(ids)

    # -- queries ---------------------------------------------------------------------
    @overload
    def next_token(self, prompt: Prompt, *, position: int = -1,
                   interventions: Any = None, progress: Any = False) -> NextToken: ...
    @overload
    def next_token(self, prompt: list[Prompt], *, position: int = -1,
                   interventions: Any = None, progress: Any = False) -> list[NextToken]: ...

    def next_token(self, prompt, *, position=-1, interventions=None, progress=False):
        """The next-token distribution after ``prompt`` (or after each of a list, batched).

        ``position`` reads another position than the last (0-based, negative from
        the end): the prediction made after ``prompt``'s first ``position+1`` tokens.
        ``interventions`` (a spec or a list of specs) edit the forward pass.
        ``progress=True`` (or a tqdm-like callable) shows a bar over a list of prompts.
        """
        progress = check_progress(progress)
        intervention = self._compile_interventions(interventions)
        single = isinstance(prompt, str)
        prompts = [prompt] if single else _prompt_list(prompt)
        seqs = [self.vocab.encode(p) for p in prompts]
        if isinstance(position, bool) or not isinstance(position, int):
            raise InvalidArgument(f"position={position!r}: `position` must be an int "
                                  "(-1 for the last token)")
        positions = [_position(position, len(ids), p) for ids, p in zip(seqs, prompts)]
        keeps = [len(ids) - pos for ids, pos in zip(seqs, positions)]
        logits = self._logits_in_chunks(seqs, keeps, intervention, progress)
        results = [NextToken(lg[0], vocab=self.vocab, prompt=p, token_ids=ids, position=pos)
                   for lg, p, ids, pos in zip(logits, prompts, seqs, positions)]
        return results[0] if single else results

    def logits(self, prompt: Prompt, *, interventions: Any = None) -> torch.Tensor:
        """Logits at every position of ``prompt``: ``Float[Tensor, "pos vocab"]``."""
        intervention = self._compile_interventions(interventions)
        ids = self.vocab.encode(prompt)
        return self.engine.logits([ids], [len(ids)], intervention)[0].clone()

    @overload
    def score(self, prompt: Prompt, continuation: str, *, interventions: Any = None,
              split: str = "harness") -> Score: ...
    @overload
    def score(self, prompt: list[Prompt], continuation: str | list[str], *,
              interventions: Any = None, split: str = "harness") -> list[Score]: ...

    def score(self, prompt, continuation, *, interventions=None, split="harness"):
        """Log-probability of ``continuation`` after ``prompt`` under teacher forcing.

        ``split="harness"`` (the default) splits text into context and continuation
        tokens as lm-evaluation-harness 0.4 ``loglikelihood`` does: the prompt's
        trailing whitespace moves onto the continuation, prompt + continuation are
        tokenized together, and the continuation is every token after the (stripped)
        prompt's own token count. ``split="exact"`` scores the continuation's own
        tokens (``tokenizer(continuation, add_special_tokens=False)``) after the
        prompt's, so a prompt ending in a space scores a lone ``' '`` token.

        >>> probe.score("The capital of France is ", "Paris").tokens[0].token  # doctest: +SKIP
        ' Paris'
        """
        if split not in ("harness", "exact"):
            raise InvalidArgument(f"split={short(split, 60)}: `split` must be 'harness' (split as "
                                  "lm-evaluation-harness does, the default) or 'exact' (the "
                                  "continuation's own tokens)")
        intervention = self._compile_interventions(interventions)
        single = isinstance(prompt, str)
        prompts = [prompt] if single else _prompt_list(prompt)
        conts = _continuations(continuation, len(prompts))
        seqs, cont_ids = [], []
        for p, (name, c) in zip(prompts, conts):
            ids, cids = (self._harness_pair(p, c, name) if split == "harness"
                         else (self.vocab.encode(p), self.vocab.pieces(c, name=name)))
            if not cids:
                raise InvalidArgument(_no_tokens(name, c, not self.vocab.pieces(c, name=name)))
            if self.n_ctx is not None and len(ids) + len(cids) - 1 > self.n_ctx:
                raise PromptError(f"prompt + continuation are {len(ids) + len(cids)} tokens, "
                                  f"longer than the model's context of {self.n_ctx}")
            # The last continuation token is never an input: leave it out of the forward.
            seqs.append(ids + cids[:-1])
            cont_ids.append(cids)
        logits = self.engine.logits(seqs, [len(c) for c in cont_ids], intervention)
        scores = [self._score(p, c, cids, lg)
                  for p, (_, c), cids, lg in zip(prompts, conts, cont_ids, logits)]
        return scores[0] if single else scores

    def _harness_pair(self, prompt: str, cont: str, name: str) -> tuple[list[int], list[int]]:
        """lm-evaluation-harness 0.4 ``_encode_pair``: (context ids, continuation ids)."""
        n_spaces = len(prompt) - len(prompt.rstrip())
        if n_spaces:
            prompt, cont = prompt[:-n_spaces], prompt[-n_spaces:] + cont
        ids = self.vocab.encode(prompt, allow_empty=True)
        if not ids:
            raise PromptError(f"prompt={short(prompt + cont[:n_spaces], 60)}: with "
                              "split='harness' the prompt's trailing whitespace moves to the "
                              "continuation, which leaves no context; give some text before it, "
                              "or use split='exact'")
        whole = self.vocab.encode(prompt + cont, name=f"prompt + {name}")
        return ids, whole[len(ids):]

    def _score(self, prompt: str, cont: str, cids: list[int], logits: torch.Tensor) -> Score:
        # logits: [len(cids), vocab]; row j predicts cids[j].
        logprobs = log_softmax(logits)
        target = torch.tensor(cids)
        rows = torch.arange(len(cids))
        chosen = logits[rows, target]
        ranks = (logits > chosen[:, None]).sum(-1) + 1
        tokens = tuple(
            TokenScore(token=self.vocab.decode_one(t), id=t, logprob=float(logprobs[j, t]),
                       rank=int(ranks[j]), greedy=int(ranks[j]) == 1
                       and int(logits[j].argmax()) == t)
            for j, t in enumerate(cids))
        return Score(prompt=prompt, continuation=cont, tokens=tokens)

    def _logits_in_chunks(self, seqs: list[list[int]], keeps: list[int], intervention: Any,
                          progress: Any) -> list[torch.Tensor]:
        """``engine.logits``; with a progress bar, in chunks of about one batched forward each."""
        if progress is False or len(seqs) == 1:
            return self.engine.logits(seqs, keeps, intervention)
        size = max(1, self.engine.max_batch_tokens // max(len(ids) for ids in seqs))
        out: list[torch.Tensor] = []
        with bar(progress, total=len(seqs), desc="next_token") as shown:
            for i in range(0, len(seqs), size):
                out += self.engine.logits(seqs[i:i + size], keeps[i:i + size], intervention)
                shown.update(len(seqs[i:i + size]))
        return out


def _continuations(continuation: Any, n: int) -> list[tuple[str, str]]:
    """``(argument name, text)`` per prompt; named errors for anything but non-empty str."""
    if isinstance(continuation, str):
        items = [("continuation", continuation)] * n
    elif isinstance(continuation, (list, tuple)):
        if len(continuation) != n:
            raise InvalidArgument(f"continuation: got {len(continuation)} continuations for "
                                  f"{n} prompts; give one each, or one str")
        items = [(f"continuation[{i}]", c) for i, c in enumerate(continuation)]
    else:
        raise InvalidArgument(f"continuation={short(continuation, 60)}: `continuation` must be a "
                              "non-empty str (e.g. ' Paris'), or a list of them, one per prompt; "
                              f"not {type(continuation).__name__}")
    for name, c in items:
        if not isinstance(c, str) or not c:
            raise InvalidArgument(f"{name}={short(c, 60)}: `{name}` must be a non-empty str, "
                                  "e.g. ' Paris'")
    return items


def _no_tokens(name: str, cont: str, dropped: bool) -> str:
    if dropped:
        return (f"{name}={short(cont, 60)}: encodes to 0 tokens (the tokenizer drops all of it), "
                "so there is nothing to score; give text the tokenizer keeps, e.g. ' Paris'")
    return (f"{name}={short(cont, 60)}: adds no token after the prompt when both are tokenized "
            "together (it merges into the prompt's last token), so there is nothing to score "
            "with split='harness'; use split='exact' to score its own tokens")


def _is_hf_model(model: Any) -> bool:
    try:
        from transformers import PreTrainedModel
    except ImportError:  # pragma: no cover - transformers is a dependency
        return False
    return isinstance(model, PreTrainedModel)


def _boot_copy(hf_model: Any, tokenizer: Any) -> Any:
    """A deferred boot on a deep copy: booting changes the model it is given."""
    if tokenizer is None:
        raise InvalidArgument("tokenizer=None: wrapping a Hugging Face model needs its "
                              "tokenizer: Probe(hf_model, tokenizer=tokenizer)")
    device = next(iter(hf_model.parameters())).device
    dtype = next(iter(hf_model.parameters())).dtype
    name = getattr(hf_model.config, "_name_or_path", None) or type(hf_model).__name__
    deferred, _ = defer(copy.deepcopy(hf_model).eval(), tokenizer, name, device, dtype, {})
    return deferred
