"""Reproduce "LLM breakdown 2/6: Logits and next-token prediction" with logitprobe.

Every step of the tutorial notebook, one or two calls each, on the embedded
SmolLM2 model (offline) or on GPT-2 with the Hugging Face Hub:

    python examples/reproduce_tutorial.py                 # smollm2, figures in ./tutorial-figures
    python examples/reproduce_tutorial.py --model gpt2 --dark --out figs

The tutorial's numbers are Hugging Face logits; logitprobe's are the same
(raw TransformerBridge logits, the model's own tokenization without BOS).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: figures go to files
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

import logitprobe  # noqa: E402
from logitprobe.interventions import SetLogit  # noqa: E402
from logitprobe.plot import (plot_log_softmax_panels, plot_logits, plot_softmax_panels,  # noqa: E402
                             style)

TEXT = "I think more people would eat tumeric if it were purple."
PROMPT = "I like oat milk in my"


def section(title: str) -> None:
    print(f"\n## {title}")


def save(ax_or_axes, out: Path, name: str) -> Path:
    fig = getattr(ax_or_axes, "figure", None) or ax_or_axes.flat[0].figure
    path = out / f"{name}.png"
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def run(model: str, out: Path, token: str, seed: int) -> list[Path]:
    probe = logitprobe.load(model)
    figures: list[Path] = []

    section("Tokens and logits")
    ids = probe.encode(TEXT)
    print(f"There are {len(TEXT)} characters and {len(ids)} tokens.")
    logits = probe.logits(TEXT)
    print(f"logits shape: {tuple(logits.shape)} (positions x vocabulary; the tutorial's "
          f"[1, 13, 50257] has a batch axis)")
    pieces = probe.tokenize(TEXT)
    print(f'5th token is "{pieces[4]}"')
    print(f'6th token is "{pieces[5]}"')

    section("Logits from the 5th token")
    fifth = probe.next_token(TEXT, position=4)
    figures.append(save(plot_logits(fifth, highlight=ids[5], title="Logits from the 5th token"),
                        out, "logits_5th_token"))
    print(f"next token after the 5th: {fifth.argmax.token!r} (the text has {pieces[5]!r}, "
          f"rank {fifth.rank(ids[5])})")
    print(f"sum of raw logits: {float(fifth.logits.sum()):.2f} (meaningless: logits are unnormalised)")

    section("About softmaxing")
    raw = fifth.logits
    direct = torch.exp(raw) / torch.exp(raw).sum()
    print(f"direct softmax vs F.softmax, max |difference|: "
          f"{float((direct - F.softmax(raw, -1)).abs().max()):.3g}")
    shifted = raw + 100  # same distribution: softmax ignores a constant shift
    direct_shifted = torch.exp(shifted) / torch.exp(shifted).sum()
    print(f"after adding 100 to every logit: exp overflows to inf, direct softmax gives "
          f"{int(torch.isnan(direct_shifted).sum())} NaNs; F.softmax still matches: "
          f"{torch.allclose(F.softmax(shifted, -1), F.softmax(raw, -1), atol=1e-6)}")
    print(f"log-softmax keeps tiny probabilities: smallest prob {float(fifth.probs.min()):.3g}, "
          f"its log-prob {float(fifth.logprobs.min()):.2f}")
    figures.append(save(plot_softmax_panels(fifth), out, "softmax_panels"))
    figures.append(save(plot_log_softmax_panels(fifth), out, "log_softmax_panels"))

    section(f"Generating new tokens after {PROMPT!r}")
    nt = probe.next_token(PROMPT)
    print(f'The most likely next token is "{nt.argmax.token}"')
    figures.append(save(plot_logits(nt, title="Logits from the final token"), out, "logits_final"))
    print(nt.top(10))

    section(f"Where's the{token}?")
    print(f'"{token}" has index {probe.token_id(token)} and rank {nt.rank(token)} '
          f"(1-based; p={nt.prob(token):.4f})")

    section("Probabilistic token sampling")
    for cand in probe.sample(PROMPT, 5, seed=seed):
        print(f'"{cand.token}" (p={cand.prob:.3f}, rank {cand.rank})')

    section("Generating a token sequence, one step at a time")
    for label, do_sample in (("greedy", False), ("sampled", True)):
        print(f"-- {label}")
        text = PROMPT
        for i, (_, chosen) in enumerate(probe.steps(PROMPT, max_new_tokens=10, do_sample=do_sample,
                                                    seed=seed, stop_at_eos=False)):
            text += chosen.token
            print(f"Iteration {i}:  {text!r}")

    section("The better way: generate (with a KV cache)")
    gen = probe.generate(PROMPT, max_new_tokens=10, do_sample=True, seed=seed)
    print(repr(PROMPT + gen.text))

    section(f"Manipulating model internals: set the logit of {token!r} to max + 10")
    boost = SetLogit(token, to="max+10", positions="last")
    hooked = probe.next_token(PROMPT, interventions=[boost])
    print(f'The most likely next token is "{hooked.argmax.token}" '
          f"(logit {hooked.logit(token):.2f} = max {float(nt.logits.max()):.2f} + 10)")
    figures.append(save(plot_logits(hooked, title="Logits from the final token (hooked)"),
                        out, "logits_hooked"))
    print(f"the hook is gone afterwards: argmax again {probe.next_token(PROMPT).argmax.token!r}")
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="smollm2", help="smollm2 (offline) or gpt2 (online)")
    parser.add_argument("--out", default="tutorial-figures", help="folder for the PNG figures")
    parser.add_argument("--token", default=" coffee", help="the token to look for and boost")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--dark", action="store_true", help="the tutorial's dark theme")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with style("dark" if args.dark else "light"):
        figures = run(args.model, out, args.token, args.seed)
    print(f"\nFigures written to {out.resolve()}:")
    for path in figures:
        print(f"  {path.name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
