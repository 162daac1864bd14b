"""docs/errors.md catalogues every error type, with messages that the code really produces."""

from __future__ import annotations

import importlib
import pkgutil
from pathlib import Path

import pytest

import logitprobe
from logitprobe import LogitProbeError
from logitprobe import assertions as A
from logitprobe._schema import parse_suite
from logitprobe.interventions import SetLogit

CATALOGUE = Path(__file__).resolve().parents[1] / "docs" / "errors.md"


def all_error_types() -> set[type]:
    """Every LogitProbeError subclass defined anywhere in the package (all modules imported)."""
    for info in pkgutil.walk_packages(logitprobe.__path__, "logitprobe."):
        importlib.import_module(info.name)
    found, todo = set(), [LogitProbeError]
    while todo:
        cls = todo.pop()
        if cls.__module__.startswith("logitprobe") and cls not in found:
            found.add(cls)
            todo.extend(cls.__subclasses__())
    return found


def test_every_error_type_is_catalogued():
    text = CATALOGUE.read_text()
    types = all_error_types()
    assert {"TokenError", "PromptError", "InvalidArgument", "InterventionNotFired"} <= \
        {t.__name__ for t in types}  # the walk does find them
    missing = sorted(t.__name__ for t in types if f"| `{t.__name__}` |" not in text)
    assert not missing, f"docs/errors.md has no row for {missing}"


def first_line(exc: BaseException) -> str:
    return str(exc).splitlines()[0]


TRIGGERS = {
    "multi-token": lambda p: p.token_id(" oat milk"),
    "leading space": lambda p: p.token_id("coffee"),
    "id range": lambda p: p.token_id(49152),
    "decode": lambda p: p.decode(["a"]),
    "surrogate token": lambda p: p.token_id("\ud800"),
    "empty prompt": lambda p: p.next_token(""),
    "long prompt": lambda p: p.next_token("word " * 9000),
    "surrogate prompt": lambda p: p.next_token("I like oat milk in my\ud800"),
    "k": lambda p: p.next_token("I like").top(0),
    "bool k": lambda p: p.next_token("I like").top(k=True),
    "memory": lambda p: p.sample("I like oat milk in my", n=10**12),
    "metric": lambda p: p.patch_sweep("The capital of France is", "The capital of Italy is",
                                      metric=lambda logits: logits[:3]),
    "assertion": lambda p: A.assert_in_top(p.next_token("The capital of France is"), " Rome",
                                           k=5),
    "behaviour file": lambda p: parse_suite(
        "- prompt: The capital of France is\n  expect:\n    in_topk: {token: ' Paris', k: 5}\n",
        "test_geo.logit.yaml"),
    "not fired": lambda p: p.generate("I like oat milk in my", max_new_tokens=2,
                                      interventions=SetLogit(" coffee", to=0.0, positions=[40])),
}


@pytest.mark.parametrize("case", sorted(TRIGGERS))
def test_catalogued_messages_are_real(smol, case):
    with pytest.raises(LogitProbeError) as err:
        TRIGGERS[case](smol)
    text = CATALOGUE.read_text()
    row = f"| `{type(err.value).__name__}` |"
    message = first_line(err.value)
    assert message in text, f"docs/errors.md does not show the real message: {message}"
    assert any(line.startswith(row) and message in line for line in text.splitlines()), \
        f"the message is not in a {row} row"
