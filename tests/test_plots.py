"""Every plot renders headless to PNG and shows what it claims (data read back from the artists)."""

from __future__ import annotations

import time

import matplotlib

matplotlib.use("Agg")

import matplotlib.image as mpimg  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from matplotlib.colors import to_hex  # noqa: E402

from logitprobe import InvalidArgument  # noqa: E402
from logitprobe.plot import (plot_attribution, plot_head_attribution, plot_lens,  # noqa: E402
                             plot_lens_top, plot_log_softmax_panels, plot_logits,
                             plot_softmax_panels, plot_top_k, style)

PROMPT = "The capital of France is"


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


@pytest.fixture(scope="module")
def nt(tiny):
    return tiny.next_token(PROMPT)


@pytest.fixture(scope="module")
def lens(tiny):
    return tiny.lens(PROMPT, tokens=[" the", " of"], k=4)


@pytest.fixture(scope="module")
def att(tiny):
    return tiny.attribute(PROMPT, " the", versus=" of")


def render(ax, path):
    """Save the figure of ``ax`` to PNG; return the pixels (rows, cols, channels)."""
    fig = ax.figure if hasattr(ax, "figure") else np.asarray(ax).flat[0].figure
    fig.savefig(path, dpi=60)
    image = mpimg.imread(path)
    assert image.ndim == 3 and image.shape[0] > 50 and image.shape[1] > 50
    return image


def line(ax, label_start):
    found = [ln for ln in ax.get_lines() if ln.get_label().startswith(label_start)]
    assert len(found) == 1, [ln.get_label() for ln in ax.get_lines()]
    return found[0]


# -- next-token figures ----------------------------------------------------------------
def test_plot_logits_marks_the_token_and_the_argmax(nt, tmp_path):
    token = nt.top(5)[3]  # not the argmax
    ax = plot_logits(nt, highlight=token.id)
    render(ax, tmp_path / "logits.png")
    assert ax.get_xlabel() == "Vocab index" and ax.get_ylabel() == "Logits (raw)"
    assert PROMPT in ax.get_title()
    cloud = line(ax, "_vocabulary")
    assert cloud.get_rasterized() and cloud.get_marker() == "h"
    np.testing.assert_array_equal(cloud.get_xdata(), np.arange(nt.vocab_size))
    np.testing.assert_allclose(cloud.get_ydata(), nt.logits.numpy())
    marked = line(ax, repr(token.token))
    assert list(marked.get_xdata()) == [token.id]
    assert list(marked.get_ydata()) == pytest.approx([nt.logit(token.id)])
    assert marked.get_label() == f"{token.token!r} (rank 4)"
    best = line(ax, "Max logit")
    assert list(best.get_xdata()) == [nt.argmax.id]
    assert list(best.get_ydata()) == pytest.approx([float(nt.logits.max())])
    assert best.get_label() == f"Max logit ({nt.argmax.token!r})"
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels == [best.get_label(), marked.get_label()]


def test_plot_logits_merges_a_highlighted_argmax(nt):
    ax = plot_logits(nt, highlight=nt.argmax.id)
    assert not [ln for ln in ax.get_lines() if ln.get_label().startswith("Max logit")]
    assert line(ax, repr(nt.argmax.token)).get_label().endswith("(rank 1: max logit)")
    assert plot_logits(nt, argmax=False).get_legend() is None


def test_plot_logits_on_given_axes_and_several_tokens(nt):
    fig, (left, right) = plt.subplots(1, 2)
    ids = [c.id for c in nt.top(3)[1:]]
    assert plot_logits(nt, highlight=ids, ax=right, title="mine") is right
    assert not left.get_lines() and right.get_title() == "mine"
    assert sorted(int(line(right, repr(nt.candidate(i).token)).get_xdata()[0]) for i in ids) \
        == sorted(ids)


def test_softmax_panels(nt, tmp_path):
    axes = plot_softmax_panels(nt)
    render(axes, tmp_path / "softmax.png")
    assert axes.shape == (3,)
    assert [a.get_title() for a in axes] == ["Raw logits", "Softmax logits",
                                            "Logits vs. softmax logits"]
    assert [a.get_ylabel() for a in axes] == ["Logits (raw)", "Softmax probabilities",
                                             "Softmax logits"]
    assert axes[2].get_xlabel() == "Logits (raw)"
    probs = line(axes[1], "_vocabulary").get_ydata()
    assert probs.sum() == pytest.approx(1.0, abs=1e-4)
    np.testing.assert_allclose(probs, torch.softmax(nt.logits, -1).numpy(), rtol=1e-5)
    x, y = (line(axes[2], "_vocabulary").get_xdata(), line(axes[2], "_vocabulary").get_ydata())
    np.testing.assert_allclose(x, nt.logits.numpy())
    np.testing.assert_allclose(y, probs)


def test_log_softmax_panels_on_given_axes(nt, tmp_path):
    fig, axes = plt.subplots(3, 1)
    assert plot_log_softmax_panels(nt, axes=axes) is not None
    render(axes, tmp_path / "logsoftmax.png")
    assert [a.get_title() for a in axes] == ["Softmax logits", "Log-softmax logits",
                                            "Softmax vs. log-softmax"]
    assert axes[2].get_xlabel() == "Softmax" and axes[2].get_ylabel() == "Log-softmax"
    logprobs = line(axes[1], "_vocabulary").get_ydata()
    np.testing.assert_allclose(logprobs, torch.log_softmax(nt.logits, -1).numpy(), rtol=1e-5)
    with pytest.raises(InvalidArgument, match="`axes` must be three matplotlib Axes"):
        plot_log_softmax_panels(nt, axes=axes[:2])


def test_top_k_bars(nt, tmp_path):
    top = nt.top(7)
    ax = plot_top_k(nt, 7, highlight=top[2].id)
    render(ax, tmp_path / "topk.png")
    bars = ax.patches
    assert len(bars) == 7
    assert [b.get_width() for b in bars] == pytest.approx([c.prob for c in top])
    assert [t.get_text() for t in ax.get_yticklabels()] == [repr(c.token) for c in top]
    assert ax.yaxis_inverted()  # rank 1 on top
    colors = {to_hex(b.get_facecolor()) for i, b in enumerate(bars) if i != 2}
    assert len(colors) == 1 and to_hex(bars[2].get_facecolor()) not in colors
    assert ax.get_xlabel() == "Probability"
    logit_ax = plot_top_k(nt, 3, value="logit")
    assert [b.get_width() for b in logit_ax.patches] == pytest.approx([c.logit for c in nt.top(3)])
    assert logit_ax.get_xlabel() == "Logit"


def test_many_points_render_fast(smol, tmp_path):
    """50k points per panel: each figure must render in well under the tutorial's 10-20 s."""
    big = smol.next_token("I like oat milk in my")
    for name, draw in [("logits", lambda: plot_logits(big, highlight=" coffee")),
                       ("panels", lambda: plot_softmax_panels(big)),
                       ("logpanels", lambda: plot_log_softmax_panels(big))]:
        # CPU time, not wall time: other processes on a busy machine do not count.
        start = time.process_time()
        render(draw(), tmp_path / f"{name}.png")
        assert time.process_time() - start < 3.0, name  # 0.2-0.4 s measured


# -- lens and attribution --------------------------------------------------------------
def test_plot_lens_ranks_and_probs(lens, tmp_path):
    ax = plot_lens(lens)
    render(ax, tmp_path / "lens.png")
    assert [ln.get_label() for ln in ax.get_lines()] == ["' the'", "' of'"]
    the = line(ax, "' the'")
    assert list(the.get_xdata()) == lens.depths and list(the.get_ydata()) == lens.rank(" the")
    assert ax.get_yscale() == "log" and ax.yaxis_inverted()
    assert ax.get_ylabel() == "Rank (1 = top)" and ax.get_xlabel().startswith("Blocks applied")
    assert ax.get_xticklabels()[0].get_text() == "embed"
    probs = plot_lens(lens, " of", metric="prob")
    assert list(line(probs, "' of'").get_ydata()) == pytest.approx(lens.prob(" of"))
    assert probs.get_ylabel() == "Probability"
    with pytest.raises(InvalidArgument, match="metric='ranks': `metric` must be one of"):
        plot_lens(lens, metric="ranks")


def test_plot_lens_defaults_to_the_prediction(tiny):
    bare = tiny.lens("Hello world")
    ax = plot_lens(bare)
    assert [ln.get_label() for ln in ax.get_lines()] == [repr(bare.final.argmax.token)]


def test_plot_lens_top_grid(lens, tmp_path):
    ax = plot_lens_top(lens)
    render(ax, tmp_path / "lens_top.png")
    grid = ax.get_images()[0].get_array()
    assert grid.shape == (len(lens), 4)
    np.testing.assert_allclose(grid[-1], [c.prob for c in lens.final.top(4)], rtol=1e-5)
    texts = [t.get_text() for t in ax.texts]
    assert len(texts) == len(lens) * 4
    assert texts[-4] == repr(lens.final.argmax.token)[1:-1].replace(" ", "\u2423")
    assert [t.get_text() for t in ax.get_yticklabels()] == lens.labels


def test_plot_attribution_bars(att, tmp_path):
    ax = plot_attribution(att)
    render(ax, tmp_path / "attribution.png")
    assert len(ax.patches) == len(att.labels)  # one bar per part
    heights = sorted(b.get_height() for b in ax.patches)
    assert heights == pytest.approx(sorted(att.values.tolist()), abs=1e-6)
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert legend == ["embeddings", "attention", "MLP"]
    assert ax.get_xlabel() == "Layer" and att.quantity in ax.get_title()


def test_plot_head_heatmap(att, tmp_path):
    ax = plot_head_attribution(att)
    render(ax, tmp_path / "heads.png")
    image = ax.get_images()[0]
    np.testing.assert_allclose(image.get_array(), att.heads.numpy())
    low, high = image.get_clim()
    assert low == pytest.approx(-high) and high == pytest.approx(float(att.heads.abs().max()))
    assert ax.get_xlabel() == "Head" and ax.get_ylabel() == "Layer"


@pytest.mark.parametrize("plot", [plot_logits, plot_top_k, plot_softmax_panels, plot_lens,
                                  plot_lens_top, plot_attribution, plot_head_attribution])
def test_wrong_result_type_is_refused(plot, att):
    wrong = torch.zeros(10) if plot is not plot_lens else att
    with pytest.raises(InvalidArgument, match=r"=(Tensor|Attribution)\(\.\.\.\): expected a "):
        plot(wrong)


def test_bad_plot_arguments(nt):
    with pytest.raises(InvalidArgument, match="value='probs': `value` must be one of"):
        plot_top_k(nt, value="probs")
    with pytest.raises(InvalidArgument, match="ax=42: `ax` must be a matplotlib Axes"):
        plot_logits(nt, ax=42)


# -- themes ----------------------------------------------------------------------------
def test_style_as_function_and_context_manager(nt, tmp_path):
    before = matplotlib.rcParams["axes.facecolor"]
    with style("dark") as theme:
        assert matplotlib.rcParams["axes.facecolor"] == "#020617"
        assert matplotlib.rcParams["text.color"] == "#DDE2F4"
        assert not matplotlib.rcParams["axes.spines.top"]
        image = render(plot_logits(nt, highlight=" the"), tmp_path / "dark.png")
    assert matplotlib.rcParams["axes.facecolor"] == before and repr(theme) == "Theme('dark')"
    assert image[2, 2, :3].max() < 0.1  # the dark background made it into the PNG
    applied = style("dark")
    try:
        assert matplotlib.rcParams["figure.facecolor"] == "#020617"
    finally:
        applied.restore()
    with style("light"):
        image = render(plot_logits(nt), tmp_path / "light.png")
    assert image[2, 2, :3].min() > 0.9
    with pytest.raises(InvalidArgument, match=r"name='neon': the theme must be one of "
                                              r"\['dark', 'light'\]"):
        style("neon")
