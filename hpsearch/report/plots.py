"""Plots (matplotlib, Agg backend: no display needed): loss curves, the LR range test, metric vs param.

Every function writes one PNG and returns its path. matplotlib is imported
inside them, so importing hpsearch (or its CLI) never imports it.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hpsearch.direction import Direction
from hpsearch.divergence import loss_keys
from hpsearch.errors import HpsearchError
from hpsearch.space import fmt

if TYPE_CHECKING:
    from hpsearch.instruments.lr_range import LrRange
    from hpsearch.store.storage import Store

Row = Mapping[Hashable, Any]  # a leaderboard row, as pandas' to_dict("records") gives it
DPI = 100


@dataclass(frozen=True)
class TrialCurves:
    """One trial's per-epoch curves, as `hpsearch curves` and the report show them."""

    number: int
    stage: str
    rank: int
    value: float | None
    params: dict[str, Any]
    curves: dict[str, list[float]]

    @property
    def label(self) -> str:
        params = " ".join(f"{k}={fmt(v)}" for k, v in self.params.items())
        return f"#{self.rank} trial {self.number} ({self.stage}) {params}"


def top_curves(store: Store, stage: str | None = None, top: int = 5) -> list[TrialCurves]:
    """The per-epoch curves of the top completed trials of `stage` (None: latest; 'all': every stage).

    Raises HpsearchError when no completed trial recorded curves.
    """
    from hpsearch.leaderboard import select_stages
    from hpsearch.trials import CURVES_ATTR, ranked_trials, trial_attr

    found: list[tuple[Any, str]] = []
    stages = select_stages(store, stage)
    for info in stages:
        found += [(t, info.name) for t in store.trials(info)]
    spec = stages[0].spec
    by_id = {id(t): name for t, name in found}
    ranked = ranked_trials([t for t, _ in found], spec.direction)
    out = []
    for rank, t in enumerate(ranked, 1):
        curves = trial_attr(t, CURVES_ATTR) or {}
        if curves:
            out.append(TrialCurves(t.number, by_id[id(t)], rank, t.value, dict(t.params), curves))
        if len(out) >= top:
            break
    if not out:
        names = ", ".join(s.name for s in stages)
        raise HpsearchError(
            f"no completed trial of {store.name!r} ({names}) recorded loss curves; "
            "the workload must call trial.report(epoch, train_loss=..., val_loss=...)"
        )
    return out


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")  # files only: works on servers without a display
    import matplotlib.pyplot as plt

    return plt


def plot_curves(trials: Sequence[TrialCurves], path: str | Path, title: str = "") -> Path:
    """Train (solid) and val (dashed) loss per epoch, one colour per trial, legend with the params."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(9, 5.5), dpi=DPI)
    colours = plt.get_cmap("tab10")
    drawn: list[float] = []
    for i, t in enumerate(trials):
        colour = colours(i % 10)
        train, val = loss_keys(t.curves)
        drawn += [v for key in (train, val) if key for v in t.curves[key] if math.isfinite(v)]
        if train:
            ys = t.curves[train]
            ax.plot(range(1, len(ys) + 1), ys, "-", color=colour, marker="o", markersize=3, label=t.label)
        if val:
            ys = t.curves[val]
            ax.plot(range(1, len(ys) + 1), ys, "--", color=colour, label=None if train else t.label)
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss (solid: train, dashed: val)")
    if drawn and min(drawn) > 0:  # a loss that can be negative (an NLL) has no log scale
        ax.set_yscale("log")
    ax.grid(True, which="both", alpha=0.3)
    ax.set_title(title or "loss curves of the top trials")
    # Below the axes: a legend inside would hide the curves it names.
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(0.0, -0.12), ncol=1, frameon=False)
    return _save(fig, path)


def plot_lr_range(found: LrRange, path: str | Path) -> Path:
    """Loss vs lr on a log x axis, raw and smoothed, with the suggested range shaded."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=DPI)
    ax.plot(found.lrs, found.losses, color="0.75", lw=0.8, label="loss per step")
    ax.plot(found.lrs, found.smoothed, color="C0", lw=2, label="smoothed")
    ax.axvspan(
        found.low, found.high, color="C2", alpha=0.2, label=f"suggested lr range [{fmt(found.low)}, {fmt(found.high)}]"
    )
    ax.set_xscale("log")
    finite = [s for s in found.smoothed if math.isfinite(s)]
    if finite:  # keep the explosion from squashing the interesting part
        top = max(finite[: max(len(finite) // 10, 1)])
        ax.set_ylim(min(finite) * 0.8, top * 1.5)
    ax.set_xlabel("learning rate (log scale)")
    ax.set_ylabel("training loss")
    ax.set_title(f"{found.study}: LR range test ({found.stopped})")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path)


SCATTER_COLUMNS = 3  # plots per row: six params make two rows of readable plots, not six slivers


def plot_scatter(
    rows: Sequence[Row],
    space: Any,
    metric: str,
    path: str | Path,
    direction: Direction | str = Direction.maximize,
    title: str = "",
) -> Path:
    """The metric against each parameter, three plots to a row; the best trial starred.

    `rows` are leaderboard rows (dicts with the metric and the params) of
    completed trials. Numeric params: searched range and border zones (outer
    10%) marked; log ranges get a log x axis whose tick labels carry the
    digits that tell them apart; numeric value sets are ticked at their
    values, and a 0 on a log axis gets its own place, labelled "0", a decade
    below the smallest positive value, past an axis break. String (or bool) params:
    a box and the points per value, in the study file's order.
    """
    plt = _pyplot()
    params = list(space)
    if not params:
        raise HpsearchError("no parameter to plot")
    ncols = min(len(params), SCATTER_COLUMNS)
    nrows = math.ceil(len(params) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.2 * ncols, 3.6 * nrows), dpi=DPI, squeeze=False)
    flat = list(axes.ravel())
    best = _best_row(rows, metric, Direction(direction))
    for ax, p in zip(flat, params):
        if p.numeric:
            _numeric_panel(ax, p, rows, metric, best)
        else:
            _category_panel(ax, p, rows, metric, best)
        ax.set_ylabel(metric)
        ax.grid(True, which="both", alpha=0.3)
    for ax in flat[len(params) :]:
        ax.set_visible(False)  # the last row's empty places
    labelled = [ax for ax in flat[: len(params)] if ax.get_legend_handles_labels()[0]]
    if labelled:
        labelled[0].legend(fontsize=7)
    if title:
        fig.suptitle(title)
    return _save(fig, path)


def _best_row(rows: Sequence[Row], metric: str, direction: Direction) -> Row | None:
    scored = [r for r in rows if _number(r.get(metric))]
    if not scored:
        return None
    return direction.best(scored, key=lambda r: r[metric])


def _numeric_panel(ax: Any, p: Any, rows: Sequence[Row], metric: str, best: Row | None) -> None:
    from hpsearch.border import BORDER_ZONE
    from hpsearch.space import Range

    floor = None  # where a value set on a log axis draws its 0
    if isinstance(p, Range):
        lo, hi, log = float(p.low), float(p.high), p.log
    else:
        values = [float(v) for v in p.ordered]
        positive = [v for v in values if v > 0]
        log = p.log_spaced
        floor = positive[0] / 10 if positive else 0.0  # a decade apart: room for "0", the break and the next label
        lo, hi = (floor if values[0] <= 0 and log else values[0]), values[-1]

    def x_of(value: Any) -> float:
        return floor if floor is not None and log and float(value) <= 0 else float(value)

    scored = [r for r in rows if _number(r.get(p.name)) and _number(r.get(metric))]
    if log:
        _log_axis(ax, hi / lo)
        if floor is not None:  # a value set: ticked at its values, 0 at its own place
            _value_ticks(ax, [x_of(v) for v in p.ordered], [float(v) for v in p.ordered], floor)
        span = math.log10(hi) - math.log10(lo)
        zone_lo, zone_hi = 10 ** (math.log10(lo) + BORDER_ZONE * span), 10 ** (math.log10(hi) - BORDER_ZONE * span)
    else:
        span = hi - lo
        zone_lo, zone_hi = lo + BORDER_ZONE * span, hi - BORDER_ZONE * span
    if isinstance(p, Range):
        ax.axvspan(lo, zone_lo, color="C3", alpha=0.15, label="border zone (outer 10%)")
        ax.axvspan(zone_hi, hi, color="C3", alpha=0.15)
    ax.axvline(lo, color="k", lw=1, ls=":", label="searched range")
    ax.axvline(hi, color="k", lw=1, ls=":")
    if scored:
        ax.scatter([x_of(r[p.name]) for r in scored], [r[metric] for r in scored], s=18, alpha=0.75, color="C0")
    if best is not None and _number(best.get(p.name)):
        ax.scatter([x_of(best[p.name])], [best[metric]], s=60, marker="*", color="C1", label="best", zorder=3)
    ax.set_xlabel(p.name + (" (log)" if log else ""))


def _category_panel(ax: Any, p: Any, rows: Sequence[Row], metric: str, best: Row | None) -> None:
    """A box per value of a string param and its points, spread evenly (no random jitter) across the box."""
    categories = list(p.values)
    groups = [[r[metric] for r in rows if _number(r.get(metric)) and _same(r.get(p.name), c)] for c in categories]
    filled = [i for i, ys in enumerate(groups) if ys]
    if filled:
        ax.boxplot(
            [groups[i] for i in filled], positions=filled, widths=0.5, showfliers=False, medianprops={"color": "0.3"}
        )
    for i in filled:
        ys = groups[i]
        offsets = [0.0] if len(ys) == 1 else [-0.15 + 0.3 * k / (len(ys) - 1) for k in range(len(ys))]
        ax.scatter([i + o for o in offsets], ys, s=18, alpha=0.75, color="C0", zorder=2)
    if best is not None:
        at = next((i for i, c in enumerate(categories) if _same(best.get(p.name), c)), None)
        if at is not None:
            ax.scatter([at], [best[metric]], s=60, marker="*", color="C1", label="best", zorder=3)
    ax.set_xticks(range(len(categories)))
    ax.set_xticklabels([fmt(c) for c in categories])
    ax.set_xlim(-0.6, len(categories) - 0.4)
    ax.set_xlabel(p.name)


def _same(value: Any, category: Any) -> bool:
    """Equal, and a bool only to a bool: True is not the category 1."""
    return isinstance(value, bool) == isinstance(category, bool) and value == category


def _log_axis(ax: Any, ratio: float) -> None:
    """A log x axis labelled at 10^k, at 1, 2, 5 x 10^k for ranges under two decades (refine), and
    at evenly spaced round values for ranges under a factor of 5 (where 1, 2, 5 x 10^k may leave one tick);
    every label with the digits that tell it from its neighbours (0.15, 0.175, 0.2, not 0.2, 0.2, 0.2)."""
    from matplotlib.ticker import LogLocator, MaxNLocator, NullFormatter

    ax.set_xscale("log")
    if ratio < NARROW:
        ax.xaxis.set_major_locator(MaxNLocator(nbins=4, steps=[1, 2, 2.5, 5, 10]))
    else:
        subs = (1.0, 2.0, 5.0) if ratio < 100 else (1.0,)
        ax.xaxis.set_major_locator(LogLocator(base=10, subs=subs, numticks=12))
    ax.xaxis.set_major_formatter(_distinct_formatter())
    ax.xaxis.set_minor_formatter(NullFormatter())


# A log range narrower than this factor is ticked like a linear one (wider ones hold two of 1, 2, 5 x 10^k).
NARROW = 5.0
BREAK = "//"  # drawn on the x axis between a value set's 0 and its smallest positive value


def _value_ticks(ax: Any, xs: list[float], values: list[float], floor: float) -> None:
    """A value set on a log axis: a tick at each value (its 0 at `floor`, labelled "0"), and an axis
    break between 0's place and the smallest positive value: the distance there means nothing."""
    from matplotlib.ticker import FixedLocator, NullLocator

    labels = _tick_labels(values)
    ax.xaxis.set_major_locator(FixedLocator(xs))
    ax.set_xticklabels(labels)
    ax.xaxis.set_minor_locator(NullLocator())
    positive = [v for v in values if v > 0]
    if any(v <= 0 for v in values) and positive:
        gap = math.sqrt(floor * positive[0])
        ax.text(
            gap,
            0.0,
            BREAK,
            transform=ax.get_xaxis_transform(),
            ha="center",
            va="center",
            fontsize=9,
            backgroundcolor="white",
            clip_on=False,
            zorder=4,
        )


def _distinct_formatter() -> Any:
    """A tick formatter that gives every visible tick the fewest significant digits keeping them distinct."""
    from matplotlib.ticker import Formatter

    class Distinct(Formatter):
        def __init__(self) -> None:
            self.labels: dict[float, str] = {}

        def set_locs(self, locs: Any) -> None:
            super().set_locs(locs)
            low, high = sorted(self.axis.get_view_interval()) if self.axis is not None else (-math.inf, math.inf)
            shown = [float(x) for x in locs if low <= x <= high] or [float(x) for x in locs]
            self.labels = dict(zip(shown, _tick_labels(shown)))

        def __call__(self, x: float, pos: int | None = None) -> str:
            return self.labels.get(float(x)) or _tick_labels([float(x)])[0]

    return Distinct()


def _tick_labels(values: Sequence[float]) -> list[str]:
    """Tick labels for `values` with the fewest significant digits (1 to 6) that write each one
    exactly and tell them apart: 0.15, 0.175, 0.2; 1e-05, 2.5e-05; 128; 0 as "0"."""
    for digits in range(1, 7):
        labels = [_short(v, digits) for v in values]
        exact = all(math.isclose(float(label), v, rel_tol=1e-9) for label, v in zip(labels, values))
        if exact and len(set(labels)) == len(set(values)):
            break
    return labels


def _short(value: float, digits: int) -> str:
    """`value` with `digits` significant digits (all of an integer part), trailing zeros dropped:
    positional from 0.01 to 1e4, else 2.5e-05 (as space.fmt writes values)."""
    if value == 0:
        return "0"
    if 1e-2 <= abs(value) < 1e4:
        text = f"{value:.{max(digits - 1 - math.floor(math.log10(abs(value))), 0)}f}"
        return text.rstrip("0").rstrip(".") if "." in text else text
    mantissa, exponent = f"{value:.{digits - 1}e}".split("e")
    return (mantissa.rstrip("0").rstrip(".") if "." in mantissa else mantissa) + "e" + exponent


def _number(value: Any) -> bool:
    """A finite number (numpy's too: leaderboard rows of an Int64 column hold them), not a bool."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


def _save(fig: Any, path: str | Path) -> Path:
    import matplotlib.pyplot as plt

    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.tight_layout()
        fig.savefig(path, bbox_inches="tight")
    except OSError as e:
        raise HpsearchError(f"cannot write the plot {path}: {e.strerror}") from None
    finally:
        plt.close(fig)
    return path


SPARKS = "▁▂▃▄▅▆▇█"


def sparkline(values: Sequence[float], low: float, high: float) -> str:
    """One character per value, scaled between low and high (log scale when both are positive)."""

    def scale(v: float) -> float:
        return math.log10(v) if low > 0 and v > 0 else v

    a, b = (scale(low), scale(high)) if low > 0 else (low, high)
    out = []
    for v in values:
        if not math.isfinite(v):
            out.append("×")
            continue
        x = 0.0 if b == a else (scale(v) - a) / (b - a)
        out.append(SPARKS[min(max(int(round(x * (len(SPARKS) - 1))), 0), len(SPARKS) - 1)])
    return "".join(out)
