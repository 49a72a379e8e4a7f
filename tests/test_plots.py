"""The pictures: lr_find.png's range and smoothed curve, embedding.png's labels and letters."""

import math

import pytest
import torch

from charmlp.training.lr_find import smooth, suggest
from charmlp.training.plots import embedding_2d, embedding_figure, lr_find_figure, spread_labels


def lr_figure(exponents: torch.Tensor, losses: list[float], window: int = 50):
    centres, smoothed = smooth(exponents, losses, window)
    lr = suggest(exponents, losses, window)
    return lr_find_figure(exponents.tolist(), losses, centres.tolist(), smoothed.tolist(), lr), smoothed, lr


def test_smooth_is_the_moving_average_that_suggest_reads():
    exponents = torch.tensor([-3.0, -2.0, -1.0, 0.0, 1.0])
    losses = [4.0, 2.0, 0.0, 2.0, 4.0]
    centres, smoothed = smooth(exponents, losses, window=3)
    # by hand: (4+2+0)/3, (2+0+2)/3, (0+2+4)/3, each at the middle exponent of its three
    assert smoothed.tolist() == pytest.approx([2.0, 4 / 3, 2.0])
    assert centres.tolist() == [-2.0, -1.0, 0.0]
    assert suggest(exponents, losses, window=3) == pytest.approx(10**-1.5)  # the bottom (-1) less 0.5
    fig, _, _ = lr_figure(exponents, losses, window=3)
    raw, drawn = fig.axes[0].lines[:2]
    assert list(raw.get_ydata()) == losses
    assert list(drawn.get_xdata()) == centres.tolist() and list(drawn.get_ydata()) == pytest.approx(smoothed.tolist())


def test_smooth_a_sweep_shorter_than_the_window_is_one_point():
    centres, smoothed = smooth(torch.tensor([-2.0, -1.0, 0.0]), [3.0, 1.0, 2.0], window=50)
    assert centres.tolist() == [-1.0] and smoothed.tolist() == [2.0]


def test_lr_find_ylim_shows_the_valley_not_the_blow_up():
    exponents = torch.linspace(-3, 0, 300)
    # a descent from 10 to a valley of 2 at lr 0.1, a rise to 6, and one blow-up of 50 near the end
    losses = [2 + 8 * ((e + 1) / 2) ** 2 if e < -1 else 2 + 4 * (e + 1) for e in exponents.tolist()]
    losses[280] = 50.0
    fig, smoothed, _ = lr_figure(exponents, losses)
    bottom, top = fig.axes[0].get_ylim()
    assert bottom < float(smoothed.min()) and float(smoothed[0]) < top < 50
    assert top - bottom < 15  # the valley gets most of the height, not the spike


def test_lr_find_figure_labels_and_marks_the_suggestion_and_the_minimum():
    exponents = torch.linspace(-3, 0, 200)
    losses = [3 + (e + 1) ** 2 for e in exponents.tolist()]
    fig, smoothed, lr = lr_figure(exponents, losses)
    ax = fig.axes[0]
    assert ax.get_xlabel() and ax.get_ylabel()
    assert any(list(line.get_xdata()) == [math.log10(lr)] * 2 for line in ax.lines)  # the suggestion's vline
    assert any(list(line.get_ydata()) == [float(smoothed.min())] for line in ax.lines)  # the minimum's dot
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert any("suggested" in t for t in legend) and any("lowest" in t for t in legend)


def test_embedding_axis_labels_name_c_or_the_principal_components():
    square = torch.tensor([[-2.0, -1, 0], [2, -1, 0], [-2, 1, 0], [2, 1, 0]])  # variances 4 and 1: 80% and 20%
    _, labels = embedding_2d(square)
    assert labels == ("PC 1 (80% of variance)", "PC 2 (20% of variance)")
    assert embedding_2d(square[:, :2])[1] == ("C[:, 0]", "C[:, 1]")


@pytest.mark.parametrize("emb_dim", [2, 10])
def test_embedding_figure_has_axis_labels_and_one_text_per_character(emb_dim):
    labels = list(".abcdefghijklmnopqrstuvwxyz")
    C = torch.randn(len(labels), emb_dim, generator=torch.Generator().manual_seed(0))
    ax = embedding_figure(C, labels).axes[0]
    assert ax.get_xlabel() and ax.get_ylabel()
    assert sorted(t.get_text() for t in ax.texts) == sorted(labels)
    assert "'.'" in ax.get_legend().get_texts()[0].get_text()  # the start/end token is marked and named


def test_crowded_labels_are_spread_apart_and_lone_ones_stay_put():
    crowd = torch.full((6, 2), 0.5)  # six characters at one place
    lone = torch.tensor([[0.0, 0.0], [1.0, 1.0]])
    places = spread_labels(torch.cat([crowd, lone]), gap=0.05)
    apart = torch.cdist(places[:6], places[:6]) + torch.eye(6)
    assert apart.min() > 0.04
    assert (places[:6] - 0.5).norm(dim=1).max() < 0.1  # still near their point
    assert torch.allclose(places[6:], lone, atol=1e-3)
