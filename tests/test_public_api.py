"""The public API at a glance: an accidental export or removal is a visible change."""

import subprocess
import sys

import logitprobe

EXPECTED = [
    "Attribution",
    "Candidate",
    "InvalidArgument",
    "LensResult",
    "LogitProbeError",
    "ModelUnavailableError",
    "NextToken",
    "Probe",
    "PromptError",
    "Score",
    "Stats",
    "TokenError",
    "TokenScore",
    "TopK",
    "__version__",
    "load",
]


def test_all_is_pinned_and_sorted():
    assert logitprobe.__all__ == sorted(logitprobe.__all__)
    assert logitprobe.__all__ == EXPECTED


def test_every_name_resolves():
    for name in logitprobe.__all__:
        assert getattr(logitprobe, name) is not None, name


def test_import_does_not_import_torch():
    code = "import logitprobe, sys; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_no_public_function_is_named_test():
    for name in logitprobe.__all__:
        assert not name.startswith("test"), name


def test_version_single_source():
    from importlib.metadata import version

    assert version("logitprobe") == logitprobe.__version__
