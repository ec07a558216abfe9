"""`cmpt sweep collect`'s figures: every text inside the figure, the title clear of the panels."""

import matplotlib
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.text import Text
from matplotlib.transforms import Bbox

from cmpt_lightning.sweep import plots
from cmpt_lightning.sweep.results import SweepResults

matplotlib.use("Agg")

TYPES = ["text", "image", "both"]
TEST_RATES = [0.0, 0.1, 0.3, 0.5, 0.7, 0.9, 1.0]


def _result(train_rates, column="train_missing.rate"):
    """Rows as collect_sweep makes them: a train column x test type x test rate."""
    rows = [
        {
            column: rate,
            "test_type": test_type,
            "test_rate": test_rate,
            "n_seeds": 2,
            "acc_mean": 0.9 - 0.4 * test_rate + 0.05 * i,
            "acc_std": 0.01,
        }
        for i, rate in enumerate(train_rates)
        for test_type in TYPES
        for test_rate in TEST_RATES
    ]
    return SweepResults(rows, [column], ["acc"], "acc", [], {})


def _texts(fig, renderer):
    """The drawn text artists with their boxes (a tick label only when its tick is in view)."""
    hidden = set()
    for ax in fig.axes:
        for axis in (ax.xaxis, ax.yaxis):
            low, high = sorted(axis.get_view_interval())
            for tick in [*axis.get_major_ticks(), *axis.get_minor_ticks()]:
                if not low - 1e-9 <= tick.get_loc() <= high + 1e-9:  # not drawn
                    hidden.update((tick.label1, tick.label2))
    return [
        (text.get_text(), text.get_window_extent(renderer))
        for text in fig.findobj(Text)
        if text.get_visible() and text.get_text().strip() and text not in hidden
    ]


def _check_layout(fig):
    FigureCanvasAgg(fig)
    fig.canvas.draw()  # constrained layout runs at draw time
    renderer = fig.canvas.get_renderer()
    frame = fig.bbox.padded(0.5)  # half a pixel for rounding
    texts = _texts(fig, renderer)
    assert len(texts) > 10
    for text, box in texts:
        assert frame.containsx(box.x0) and frame.containsx(box.x1), (text, box, frame)
        assert frame.containsy(box.y0) and frame.containsy(box.y1), (text, box, frame)
    tight = fig.get_tightbbox(renderer)  # inches
    assert Bbox.union([tight, fig.bbox_inches]).bounds == pytest.approx(
        fig.bbox_inches.bounds, abs=0.01
    )
    title = fig._suptitle.get_window_extent(renderer)
    for ax in fig.axes:  # the panels with their titles and labels, and the colorbar
        assert not title.overlaps(ax.get_tightbbox(renderer)), ax


@pytest.mark.parametrize("n_train", [1, 2, 5])
@pytest.mark.parametrize("figure", [plots._heatmap_figure, plots._curves_figure])
def test_figures_keep_every_text_inside(figure, n_train):
    rates = [0.0, 0.3, 0.5, 0.7, 0.9][:n_train]
    plt = plots._pyplot()
    fig = figure(plt, _result(rates), "train missing rate")
    try:
        _check_layout(fig)
    finally:
        plt.close(fig)


def test_long_train_labels_stay_inside(tmp_path):
    plt = plots._pyplot()
    cells = [f"optimizer.init_args.lr={lr}, fusion=gated" for lr in (0.001, 0.01, 0.1)]
    fig = plots._heatmap_figure(plt, _result(cells, column="train cell"), "train cell")
    try:
        _check_layout(fig)
    finally:
        plt.close(fig)
    assert plots.plot_heatmap(_result([0.1, 0.2]), tmp_path / "h.png")
    assert (tmp_path / "h.png").read_bytes()[:4] == b"\x89PNG"
