"""Benchmark subjects: a GPT-2-small-shaped random model and the embedded SmolLM2."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

from logitprobe.loading import cache_dir
from logitprobe.testing import build_random_gpt2


def gpt2_dir(smoke: bool) -> Path:
    """GPT-2 small shape (12 x 768, vocab 50257), random weights; tiny in smoke mode."""
    size = "tiny" if smoke else "small"
    return build_random_gpt2(cache_dir() / "bench" / f"gpt2-{size}", size=size)


def prompts(n: int, seed: int = 0) -> list[str]:
    """``n`` distinct short English prompts (about 5-15 tokens)."""
    rng = random.Random(seed)
    subjects = ["The cat", "A dog", "My friend", "The capital of France", "She", "He", "The model",
                "Every morning I", "The quick brown fox", "One of the cities", "Our teacher", "I"]
    verbs = ["likes", "is", "sat on", "drinks", "thinks about", "wrote", "saw", "wants", "put"]
    objects = ["the mat", "coffee", "oat milk in my", "a city of light", "the next token",
               "tea every afternoon", "the lazy dog", "Paris", "the softmax", "a purple turmeric"]
    out: set[str] = set()
    while len(out) < n:
        text = f"{rng.choice(subjects)} {rng.choice(verbs)} {rng.choice(objects)}"
        if rng.random() < 0.5:
            text += f" and {rng.choice(verbs)} {rng.choice(objects)}"
        out.add(text)
    return sorted(out)


LOAD_SCRIPT = """
import json, resource, sys, time
start = time.perf_counter()
import logitprobe
probe = logitprobe.load(sys.argv[1], device=sys.argv[2])
probe.next_token("Hello")
elapsed = time.perf_counter() - start
# VmHWM: this process's own peak RSS (ru_maxrss carries the parent's peak across fork+exec)
try:
    status = open("/proc/self/status").read()
    peak = int(status.split("VmHWM:")[1].split()[0]) / 1024
except (OSError, IndexError):
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"seconds": elapsed, "peak_mb": peak}))
"""


def load_in_fresh_process(model: str, device: str) -> dict:
    """Load time (import included) and peak RSS of a fresh process that loads ``model``."""
    out = subprocess.run([sys.executable, "-c", LOAD_SCRIPT, model, device], capture_output=True,
                         text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])
