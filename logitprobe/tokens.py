"""Token handling: text <-> ids, single-token resolution with errors that teach.

BOS: by default a prompt is tokenized exactly as the model's own Hugging Face
tokenizer does (``tokenizer(text).input_ids``), which is what Hugging Face and
the tutorial compute; GPT-2 and SmolLM2 get no BOS. ``prepend_bos=True`` puts
the tokenizer's BOS token first, ``prepend_bos=False`` removes one the
tokenizer would add. TransformerLens prepends BOS by default, so its ranks can
differ from logitprobe's for the same prompt. The exception is a TransformerLens
3.x ``HookedTransformer``: there ``prepend_bos=None`` follows the model's own
``cfg.default_prepend_bos``, so a query sees the tokens ``model.to_tokens(prompt)``
gives (the tokenizer such a model carries is a copy TransformerLens made to add BOS).
"""

from __future__ import annotations

import operator
from typing import Any, Sequence

from ._text import short
from .errors import InvalidArgument, PromptError, TokenError

__all__ = ["Vocabulary", "check_k"]


def check_k(k: Any, vocab_size: int, name: str = "k") -> int:
    """Validate a top-k size: a positive int no larger than the vocabulary."""
    if isinstance(k, bool):  # True is an int to Python, but not a count of tokens
        raise InvalidArgument(f"{name}={k!r}: `{name}` must be an int between 1 and "
                              f"{vocab_size}, not a bool (try {name}=10)")
    if not isinstance(k, int):
        try:
            k = operator.index(k)
        except TypeError:
            raise InvalidArgument(f"{name}={short(k, 60)}: `{name}` must be an int between 1 and "
                                  f"{vocab_size} (try {name}=10)") from None
    if not 1 <= k <= vocab_size:
        raise InvalidArgument(f"{name}={k!r}: `{name}` must be between 1 and the vocabulary "
                              f"size {vocab_size} (try {name}=10)")
    return k


class Vocabulary:
    """A tokenizer seen as logitprobe needs it (wraps a Hugging Face tokenizer)."""

    def __init__(self, tokenizer: Any, *, vocab_size: int, n_ctx: int | None,
                 prepend_bos: bool | None = None):
        if prepend_bos not in (None, True, False):
            raise InvalidArgument(f"prepend_bos={prepend_bos!r}: `prepend_bos` must be None "
                                  "(tokenize as the model's tokenizer does), True or False")
        self.tokenizer = tokenizer
        self.vocab_size = vocab_size  # rows of the unembedding (may exceed len(tokenizer))
        self.n_ctx = n_ctx
        self.prepend_bos = prepend_bos
        self.bos_token_id = getattr(tokenizer, "bos_token_id", None)
        if prepend_bos and self.bos_token_id is None:
            raise InvalidArgument("prepend_bos=True: this tokenizer has no BOS token; "
                                  "use prepend_bos=None or False")
        self._decoded: dict[int, str] = {}  # id -> text; at most one entry per vocabulary id
        self._single_cache: dict[str, int] = {}

    # -- text -> ids ---------------------------------------------------------------
    def encode(self, text: Any, *, name: str = "prompt", allow_empty: bool = False) -> list[int]:
        """Ids of a prompt, honouring the BOS policy and the context length."""
        if not isinstance(text, str):
            raise PromptError(f"{name}={short(text, 60)}: `{name}` must be a str, "
                              f"not {type(text).__name__}")
        ids = self._tokens(text, add_special_tokens=self.prepend_bos is not False, name=name,
                           error=PromptError)
        if self.prepend_bos and (not ids or ids[0] != self.bos_token_id):
            ids.insert(0, self.bos_token_id)
        if not ids and not allow_empty:
            raise PromptError(f"{name}={text!r}: the prompt is empty (0 tokens); give some text "
                              "or load the model with prepend_bos=True to start from BOS")
        if self.n_ctx is not None and len(ids) > self.n_ctx:
            raise PromptError(f"{name}={short(text, 60)}: the prompt is {len(ids)} tokens, longer "
                              f"than the model's context of {self.n_ctx}; shorten it")
        return ids

    def pieces(self, text: str, *, name: str = "text") -> list[int]:
        """Ids of ``text`` as a fragment (no special tokens added)."""
        return self._tokens(text, add_special_tokens=False, name=name, error=TokenError)

    def _tokens(self, text: str, *, add_special_tokens: bool, name: str,
                error: type[InvalidArgument]) -> list[int]:
        """The tokenizer's ids for ``text``; a named error for text that is not valid Unicode."""
        try:
            return list(self.tokenizer(text, add_special_tokens=add_special_tokens)["input_ids"])
        except (TypeError, ValueError):
            # Hugging Face's fast tokenizers reject a lone surrogate ("a\ud800", e.g. from
            # surrogateescape-decoded bytes) with an unexplained TypeError.
            bad = _lone_surrogate(text)
            if bad is None:
                raise
            raise error(f"{name}={short(text, 60)}: contains a lone surrogate {text[bad]!r} at "
                        f"index {bad}, which is not valid Unicode and cannot be tokenized; "
                        "remove it (decode bytes with errors='replace')") from None

    def tokenize(self, text: str) -> list[str]:
        """The token strings of a prompt, as decoded one by one."""
        return [self.decode_one(i) for i in self.encode(text, name="text", allow_empty=True)]

    def decode(self, ids: Sequence[int] | int) -> str:
        """The text of token ids (an int id or a sequence of them)."""
        return self.tokenizer.decode(self.check_ids(ids))

    def check_ids(self, ids: Any, name: str = "ids") -> list[int]:
        """``ids`` as a list of in-range int ids; bools, floats and strings are refused."""
        if isinstance(ids, (str, bytes)):
            raise TokenError(f"{name}={short(ids, 60)}: `{name}` must be token ids (ints), not "
                             "text; probe.encode(text) gives the ids of a text")
        if _is_id(ids):
            ids = [ids]
        try:
            items = list(ids)
        except TypeError:
            raise TokenError(f"{name}={short(ids, 60)}: `{name}` must be an int id or a sequence "
                             f"of int ids (e.g. [464, 3139]), not {type(ids).__name__}") from None
        out = []
        for j, i in enumerate(items):
            if not _is_id(i):
                raise TokenError(f"{name}[{j}]={short(i, 60)}: token ids must be ints, not "
                                 f"{type(i).__name__} (probe.encode(text) gives the ids of a "
                                 "text)")
            out.append(self._check_id(operator.index(i), f"{name}[{j}]"))
        return out

    def decode_one(self, tid: int) -> str:
        """The text of one token id (cached)."""
        text = self._decoded.get(tid)
        if text is None:
            text = self._decoded[tid] = self.tokenizer.decode([tid])
        return text

    def decode_each(self, ids: Sequence[int]) -> list[str]:
        """``[decode_one(i) for i in ids]``, decoding the ids not yet cached in one batch."""
        missing = [i for i in dict.fromkeys(ids) if i not in self._decoded]
        backend = getattr(self.tokenizer, "backend_tokenizer", None)
        # The Rust tokenizer decodes a batch ~20x faster than one Hugging Face decode() call
        # per id; it returns what decode([i]) does unless the tokenizer cleans up spaces.
        if len(missing) > 64 and backend is not None and \
                not getattr(self.tokenizer, "clean_up_tokenization_spaces", True):
            texts = backend.decode_batch([[i] for i in missing], skip_special_tokens=False)
            self._decoded.update(zip(missing, texts))
        return [self.decode_one(i) for i in ids]

    # -- a single token ------------------------------------------------------------
    def token_id(self, token: Any, *, name: str = "token") -> int:
        """The id of a single token given as its string or its id."""
        if isinstance(token, bool):
            raise TokenError(f"{name}={token!r}: `{name}` must be a token string or an int id")
        if isinstance(token, int):
            return self._check_id(token, name)
        if hasattr(token, "id") and hasattr(token, "token"):  # a Candidate
            return self._check_id(int(token.id), name)
        if not isinstance(token, str):
            raise TokenError(f"{name}={short(token, 60)}: `{name}` must be a token string "
                             f"(e.g. ' Paris') or an int id, not {type(token).__name__}")
        cached = self._single_cache.get(token)
        if cached is not None:
            return cached
        if token == "":
            raise TokenError(f"{name}='': the empty string is not a token; give a token "
                             "such as ' Paris' (note the leading space)")
        ids = self.pieces(token, name=name)
        if not ids:
            raise TokenError(f"{name}={short(token, 60)} encodes to 0 tokens (the tokenizer drops "
                             "all of it), so it can be neither predicted nor scored; give a "
                             "token the tokenizer keeps, such as ' Paris'")
        if len(ids) != 1:
            shown = [self.decode_one(i) for i in ids]
            msg = (f"{name}={token!r} is {len(ids)} tokens: {shown!r}; a single-token query "
                   "needs one token. Use probe.score(prompt, continuation) for multi-token text")
            hint = self.spacing_hint(token)
            raise TokenError(msg + (f". {hint}" if hint else ""))
        self._single_cache[token] = ids[0]
        return ids[0]

    def is_single(self, token: str) -> bool:
        return len(self.pieces(token)) == 1 if token else False

    def spacing_hint(self, token: str) -> str | None:
        """'did you mean ' Paris'?' when the spaced form is one token and ``token`` lacks it."""
        if token and not token.startswith(" ") and self.is_single(" " + token):
            return f"did you mean {' ' + token!r} (with a leading space)?"
        return None

    def _check_id(self, tid: int, name: str) -> int:
        if not 0 <= tid < self.vocab_size:
            raise TokenError(f"{name}={tid!r}: token ids must be between 0 and "
                             f"{self.vocab_size - 1} for this model")
        return tid


def _is_id(value: Any) -> bool:
    """An int-like token id: ints and integer scalars (numpy, 0-d integer tensors), no bools."""
    if isinstance(value, bool) or getattr(value, "dtype", None) is not None and \
            str(value.dtype).endswith("bool"):
        return False
    if isinstance(value, int):
        return True
    try:
        operator.index(value)
    except TypeError:
        return False
    return True


def _lone_surrogate(text: str) -> int | None:
    """Index of the first lone surrogate code point in ``text`` (None when it has none)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        return exc.start
    return None


