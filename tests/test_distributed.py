"""Scaling out: sharding a suite over torchrun ranks, xdist workers on GPUs, device_map loads.

The multi-process tests start real processes (2 gloo ranks on the CPU) on the
tiny random GPT-2 and the example suite, whose cases mostly fail on a random
model: the reports are full of numbers, so equal reports mean equal numbers.
"""

import json
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import logitprobe
from logitprobe import behaviour, cli, distributed, loading
from logitprobe.errors import DistributedError, InvalidArgument, LogitProbeError
from logitprobe.pytest_plugin import Settings, State

ROOT = Path(__file__).resolve().parents[1]
SUITE = ROOT / "examples" / "behaviour" / "test_geo.logit.yaml"
TORCH_ENV = ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT",
             "PYTEST_XDIST_WORKER")


@pytest.fixture
def alone(monkeypatch):
    """No torchrun or xdist variables from the environment this test runs in."""
    for name in TORCH_ENV:
        monkeypatch.delenv(name, raising=False)


def fake_gpus(monkeypatch, count):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: count > 0)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: count)


# -- sharding ------------------------------------------------------------------------------
@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(0, 1000), max_size=60), st.integers(1, 8))
def test_shards_partition_the_cases_and_balance_the_tokens(costs, ranks):
    shares = distributed.shard(costs, ranks)
    assert len(shares) == ranks
    assert sorted(i for s in shares for i in s) == list(range(len(costs)))
    assert all(s == sorted(s) for s in shares)
    loads = [sum(costs[i] for i in s) for s in shares]
    # Longest-first greedy: no share exceeds the even split by more than one case.
    assert max(loads) <= sum(costs) / ranks + max(costs, default=0)
    assert distributed.shard(costs, ranks) == shares  # every rank computes the same split


def test_shard_small_example():
    assert distributed.shard([5, 1, 4, 2], 2) == [[0, 1], [2, 3]]  # 5+1 and 4+2
    assert distributed.shard([3, 3], 4) == [[0], [1], [], []]


@pytest.mark.parametrize("ranks", [0, -1, 1.5, True])
def test_shard_needs_a_positive_number_of_ranks(ranks):
    with pytest.raises(InvalidArgument, match=r"ranks=.*: `ranks` must be a positive int"):
        distributed.shard([1], ranks)


# -- the world and its devices -------------------------------------------------------------
def test_alone_is_no_world(alone, monkeypatch):
    assert distributed.world() is None and distributed.is_lead()
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert distributed.world() is None


def test_the_world_comes_from_torchruns_variables(alone, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert distributed.world() == distributed.World(rank=3, size=4, local_rank=1)
    assert not distributed.is_lead()
    monkeypatch.setenv("RANK", "x")
    with pytest.raises(DistributedError, match=r"RANK='x': not an integer; torchrun sets it"):
        distributed.world()


def test_each_rank_takes_the_gpu_of_its_local_rank(alone, monkeypatch):
    fake_gpus(monkeypatch, 2)
    assert distributed.rank_device(None) is None  # alone: load() chooses
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert distributed.rank_device(None) == "cuda:1"
    assert distributed.rank_device("cuda") == "cuda:1"
    assert distributed.rank_device("cuda:0") == "cuda:0"  # an explicit index is kept
    assert distributed.rank_device("cpu") == "cpu"
    monkeypatch.setenv("LOCAL_RANK", "2")
    with pytest.raises(DistributedError, match=r"LOCAL_RANK=2: this machine has 2 CUDA GPU\(s\) "
                                               r"and each rank needs its own; .*--nproc-per-node 2"):
        distributed.rank_device(None)
    fake_gpus(monkeypatch, 0)
    assert distributed.rank_device(None) is None  # CPU ranks


@pytest.mark.parametrize("worker, count, expected", [
    ("gw0", 4, "cuda:0"), ("gw3", 4, "cuda:3"), ("gw5", 4, "cuda:1"), ("gw7", 2, "cuda:1"),
    ("gw2", 0, None),  # no GPU: load() chooses the CPU
    ("", 4, None),  # not under xdist
    ("master", 4, None),
])
def test_xdist_workers_spread_over_the_gpus(alone, monkeypatch, worker, count, expected):
    fake_gpus(monkeypatch, count)
    monkeypatch.setenv("PYTEST_XDIST_WORKER", worker)
    assert distributed.worker_device() == expected
    assert distributed.worker_device("cpu") == "cpu"  # the user's choice wins
    assert distributed.worker_device("cuda:0") == "cuda:0"


@pytest.mark.parametrize("option, expected", [(None, "cuda:1"), ("cpu", "cpu")])
def test_the_probe_fixture_loads_on_the_workers_gpu(alone, monkeypatch, option, expected):
    fake_gpus(monkeypatch, 2)
    monkeypatch.setenv("PYTEST_XDIST_WORKER", "gw3")
    seen = {}
    monkeypatch.setattr(logitprobe, "load", lambda model, **kw: seen.update(kw, model=model))
    state = State(Settings(model="m", device=option, dtype="float32", skip_unavailable=False))
    assert state._load(("m", option, "float32")) is None
    assert seen["device"] == expected and seen["model"] == "m"


def test_init_refuses_a_bad_timeout_and_a_lone_process(alone):
    with pytest.raises(InvalidArgument, match=r"timeout=0: `timeout` must be a positive number"):
        distributed.init(timeout=0)
    with pytest.raises(DistributedError, match=r"WORLD_SIZE is unset or 1: .*torchrun"):
        distributed.init()


def test_a_rank_alone_at_the_rendezvous_gives_up_after_the_timeout(alone, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("MASTER_PORT", str(_free_port()))
    with pytest.raises(DistributedError, match=r"rank 0 of 2: joining the other ranks \(gloo\) "
                                               r"failed: .*within timeout=2 s"):
        distributed.init(timeout=2, device="cpu")
    assert not torch.distributed.is_initialized()


# -- one process ---------------------------------------------------------------------------
def test_alone_it_is_the_plain_suite_run(alone, tiny):
    got = distributed.run_suite(tiny, SUITE)
    want = behaviour.run_suite(tiny, SUITE)
    assert [(c.name, str(e) if e else None) for c, e in got] == \
        [(c.name, str(e) if e else None) for c, e in want]
    assert any(e is not None for _, e in got)  # a random model fails: the reports hold numbers


def test_failures_cross_process_boundaries_with_their_text():
    from logitprobe._evidence import LogitAssertionError

    plain = LogitAssertionError("verdict", "evidence", "hint")
    assert distributed._portable(plain) is plain

    class Local(LogitProbeError):  # defined in a function: does not pickle
        pass

    for exc, kind in [(Local("numbers 0.25"), LogitProbeError),
                      (type("Odd", (AssertionError,), {})("p=0.5"), LogitAssertionError)]:
        sent = distributed._portable(exc)
        assert type(sent) is kind and str(sent) == str(exc)


# -- several processes ---------------------------------------------------------------------
def _env(**extra):
    env = {k: v for k, v in os.environ.items() if k not in TORCH_ENV}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env.update(OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false", **extra)
    return env


def test_two_gloo_ranks_report_exactly_what_one_process_reports(alone, tiny_gpt2_dir, capsys,
                                                                tmp_path):
    args = ["run", str(SUITE), "--model", str(tiny_gpt2_dir), "--device", "cpu", "--json"]
    assert cli.main(args) == cli.EXIT_FAILED
    single = capsys.readouterr().out
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
         "-m", "logitprobe", *args, "--timeout", "120"],
        capture_output=True, text=True, timeout=300, cwd=tmp_path, env=_env())
    assert proc.returncode != 0, proc.stderr[-3000:]  # rank 0 exits 1: cases failed
    assert proc.stdout == single, proc.stderr[-3000:]  # rank 0 alone prints, byte for byte
    report = json.loads(proc.stdout)
    assert report["summary"]["failed"] > 0 and len(report["results"]) == 9


DRIVER = textwrap.dedent("""
    import os, sys, time
    from logitprobe import cli, distributed

    def check_case(probe, case, results=None):  # rank 1 misbehaves on its first case
        if os.environ["RANK"] == "1":
            how = os.environ["MISBEHAVE"]
            if how == "exit":
                os._exit(9)
            if how == "hang":
                time.sleep(600)
            raise ZeroDivisionError("division by zero in a test")
        return real(probe, case, results)

    real, distributed.check_case = distributed.check_case, check_case
    sys.exit(cli.main(sys.argv[1:]))
""")


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch(tmp_path, model_dir, how, timeout, grace=0):
    """Ranks 0 and 1 by hand (no torchrun, which would stop rank 0 itself).

    ``grace``: seconds rank 1 may take to exit after rank 0 did, before it is killed.
    """
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER)
    port = str(_free_port())
    procs = [subprocess.Popen(
        [sys.executable, str(driver), "run", str(SUITE), "--model", str(model_dir),
         "--device", "cpu", "--timeout", str(timeout)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path,
        env=_env(RANK=str(r), LOCAL_RANK=str(r), WORLD_SIZE="2", MASTER_ADDR="127.0.0.1",
                 MASTER_PORT=port, MISBEHAVE=how)) for r in (0, 1)]
    try:
        out, err = procs[0].communicate(timeout=240)  # bounded: nothing waits forever
    finally:
        for p in procs[1:]:
            try:
                p.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                p.kill()
            p.communicate()
    return procs, out, err


@pytest.mark.parametrize("how", ["exit", "hang"])
def test_a_rank_that_dies_or_hangs_does_not_hang_rank_0(alone, tiny_gpt2_dir, tmp_path, how):
    procs, out, err = _launch(tmp_path, tiny_gpt2_dir, how, timeout=20)
    # With a hung peer, gloo's pending send can still abort rank 0 at interpreter exit
    # (SIGABRT) after it printed its error: the error is what this test pins.
    allowed = (cli.EXIT_ERROR,) if how == "exit" else (cli.EXIT_ERROR, -6, 134)
    assert procs[0].returncode in allowed, err[-3000:]
    assert out == ""  # no report
    assert "logitprobe: error: rank 0 of 2: gathering the results failed: another rank stopped " \
           "(killed, out of memory) or did not answer within timeout=20 s" in err, err[-3000:]
    if how == "exit":
        assert procs[1].returncode == 9


def test_a_rank_that_raises_is_named_with_its_case(alone, tiny, tiny_gpt2_dir, tmp_path):
    cases = behaviour.load_suite(SUITE).cases
    first = cases[distributed.shard([distributed._cost(tiny, c) for c in cases], 2)[1][0]]
    procs, out, err = _launch(tmp_path, tiny_gpt2_dir, "raise", timeout=120, grace=60)
    assert [p.returncode for p in procs] == [cli.EXIT_ERROR] * 2, err[-3000:]
    assert out == ""
    assert (f"logitprobe: error: rank 1 failed on {first.where}: ZeroDivisionError: division by "
            "zero in a test; no report was written") in err, err[-3000:]


# -- a model over several devices ------------------------------------------------------------
def test_device_map_and_offload_pass_through_to_accelerate(tiny_gpt2_dir, tiny, tmp_path):
    """Block 1 on "disk" (accelerate loads it per forward), the rest on the CPU."""
    pytest.importorskip("accelerate")
    device_map = {"transformer.wte": "cpu", "transformer.wpe": "cpu", "transformer.h.0": "cpu",
                  "transformer.h.1": "disk", "transformer.ln_f": "cpu", "lm_head": "cpu"}
    split = logitprobe.load(str(tiny_gpt2_dir), device_map=device_map,
                            offload_folder=str(tmp_path / "offload"))
    assert split.backend.model.original_model.hf_device_map == device_map
    prompt = "The capital of France is"
    steer = [{"kind": "steer", "hook": "blocks.1.hook_resid_pre", "positive": " Italy",
              "negative": " France"}]
    for interventions in (None, steer):
        want = tiny.next_token(prompt, interventions=interventions).logits
        got = split.next_token(prompt, interventions=interventions).logits
        torch.testing.assert_close(got, want, rtol=0, atol=1e-5)
    assert split.lens(prompt, [" Paris"]).rank(" Paris") == tiny.lens(prompt, [" Paris"]).rank(" Paris")


def test_placement_goes_to_from_pretrained_not_to_the_bridge(monkeypatch, tiny_gpt2_dir):
    seen = {}

    def boot(spec, *, device, dtype, bridge_kwargs, progress):
        seen.update(device=device, model=loading._placement(bridge_kwargs))
        raise LogitProbeError("stop here")

    monkeypatch.setattr(loading, "_boot", boot)
    monkeypatch.setattr(loading, "_LOADED", {})
    with pytest.raises(LogitProbeError, match="stop here"):
        logitprobe.load(str(tiny_gpt2_dir), device_map="auto", max_memory={0: "10GiB", "cpu": "1GiB"})
    assert seen == {"device": None,
                    "model": {"device_map": "auto", "max_memory": {0: "10GiB", "cpu": "1GiB"}}}


def test_device_and_device_map_are_one_or_the_other(tiny_gpt2_dir):
    with pytest.raises(InvalidArgument, match=r"device='cpu': a model placed with device_map= or "
                                              r"n_devices= is spread over devices"):
        logitprobe.load(str(tiny_gpt2_dir), device="cpu", device_map="auto")
