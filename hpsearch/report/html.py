"""The study report: one self-contained HTML file (images embedded as base64) per study.

For each stage, in lineage order (coarse -> refine-1 -> ...): its settings,
its space and, for refine stages, how it was derived from its parent (old
range -> new range, why); the border flags; the leaderboard (top rows, with
the diagnostics columns); the metric against each numeric parameter (log axes
for log ranges, searched range dotted, border zone - the outer 10% - shaded);
and the loss curves of its top trials.
"""

from __future__ import annotations

import base64
import html
import tempfile
from pathlib import Path
from typing import Any

from hpsearch.coordinator import stage_flags
from hpsearch.errors import HpsearchError
from hpsearch.leaderboard import frame
from hpsearch.space import fmt
from hpsearch.storage import StageInfo, Store, results_dir
from hpsearch.trials import ranked_trials

REPORT_FILE = "report.html"
CURVES_TOP = 5  # more lines than this make the curves plot unreadable

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1150px; color: #222; }
h1 { margin-bottom: 0.2em; } h2 { border-bottom: 2px solid #ccc; padding-bottom: 0.2em; margin-top: 2em; }
table { border-collapse: collapse; font-size: 0.85em; margin: 0.6em 0; }
th, td { border: 1px solid #ddd; padding: 3px 7px; text-align: right; }
th { background: #f3f3f3; } td.text, th.text { text-align: left; }
.flag { background: #fff4d6; border-left: 4px solid #e0a800; padding: 0.4em 0.8em; margin: 0.3em 0; }
.muted { color: #666; } img { max-width: 100%; border: 1px solid #eee; margin: 0.4em 0; }
"""


def build_report(store: Store, directory: str | Path | None = None, top: int = 10) -> Path:
    """Write the study's report.html into its results folder and return the path.

    Raises StudyNotFound when the study has no stage yet.
    """
    stages = store.stages()
    if not stages:
        store.stage(None)  # raises StudyNotFound with the usual advice
    spec = stages[-1].spec
    lineage = " → ".join(s.name for s in stages)
    parts = [
        f"<h1>{_e(spec.name)}</h1>",
        f"<p class='muted'>workload <code>{_e(spec.workload)}</code> · {_e(spec.direction.value)} "
        f"<b>{_e(spec.metric)}</b> · stages: {_e(lineage)}</p>",
    ]
    with tempfile.TemporaryDirectory() as tmp:
        for info in stages:
            parts.append(_stage_section(store, info, Path(tmp), top))
    body = "\n".join(parts)
    page = (
        f"<!DOCTYPE html>\n<html><head><meta charset='utf-8'><title>{_e(spec.name)}: hpsearch report</title>"
        f"<style>{STYLE}</style></head><body>\n{body}\n</body></html>\n"
    )
    path = results_dir(directory) / spec.name / REPORT_FILE
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(page, encoding="utf-8")
    except OSError as e:
        raise HpsearchError(f"cannot write the report {path}: {e.strerror}") from None
    return path


def _stage_section(store: Store, info: StageInfo, tmp: Path, top: int) -> str:
    from hpsearch.report.plots import TrialCurves, plot_curves, plot_scatter

    spec = info.spec
    trials = store.trials(info)
    ranked = ranked_trials(trials, spec.direction.value)
    s = info.settings
    origin = f"derived from <b>{_e(info.parent)}</b>" if info.parent else "from the study file"
    out = [
        f"<h2>{_e(info.name)}</h2>",
        f"<p>{origin} · {_e(s.strategy.value)}, {s.trials} trials × {s.epochs} epochs, seed {s.seed}, "
        f"top-k {s.top_k} · {len(ranked)} completed of {len(trials)}</p>",
    ]
    if info.changes:
        rows = [(c["param"], c["old"], c["new"], c["why"]) for c in info.changes]
        out.append(_table(("param", "old range", "new range", "why"), rows))
    else:
        out.append(_table(("param", "range"), [(p.name, p.describe()) for p in info.space]))
    flags = stage_flags(info, ranked)
    out += [f"<div class='flag'>⚠ {_e(f.message())}</div>" for f in flags]
    if not flags and ranked:
        out.append("<p class='muted'>No best value on a border.</p>")
    df = frame([info], [trials], top)
    if len(df):
        keep = ["rank", "trial", "state", spec.metric, *info.space.names, "epochs", "border", "update_ratio", "lr_hint", "notes", "reason"]
        out.append(_frame_html(df[[c for c in keep if c in df.columns]]))
    if ranked:
        rows = frame([info], [ranked]).to_dict("records")
        scatter = plot_scatter(
            rows, info.space, spec.metric, tmp / f"{info.name}-scatter.png",
            maximize=spec.direction.value == "maximize", title=f"{info.name}: {spec.metric} vs each parameter",
        )
        out.append(_img(scatter, f"{spec.metric} against each parameter of {info.name}"))
        curves = [
            TrialCurves(t.number, info.name, rank, t.value, dict(t.params), t.user_attrs["curves"])
            for rank, t in enumerate(ranked, 1)
            if t.user_attrs.get("curves")
        ][:CURVES_TOP]
        if curves:
            path = plot_curves(curves, tmp / f"{info.name}-curves.png", f"{info.name}: loss curves of the top {len(curves)}")
            out.append(_img(path, f"loss curves of the top trials of {info.name}"))
    return "\n".join(out)


def _e(text: Any) -> str:
    return html.escape(str(text))


def _table(header: tuple[str, ...], rows: list[tuple[Any, ...]]) -> str:
    head = "".join(f"<th class='text'>{_e(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td class='text'>{_e(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _frame_html(df: Any) -> str:
    def cell(v: Any) -> str:
        if v is None or (isinstance(v, float) and v != v):
            return ""
        if isinstance(v, float):
            return fmt(v) if abs(v) < 1e-2 or abs(v) >= 1e4 else f"{v:.4g}"
        return str(v)

    head = "".join(f"<th>{_e(c)}</th>" for c in df.columns)
    rows = []
    ratio_at = list(df.columns).index("update_ratio") if "update_ratio" in df.columns else -1
    for record in df.astype(object).where(df.notna(), None).itertuples(index=False):
        cells = [
            f"{v:.1e}" if i == ratio_at and isinstance(v, float) else cell(v)  # ratios compare by decade
            for i, v in enumerate(record)
        ]
        rows.append("<tr>" + "".join(f"<td>{_e(c)}</td>" for c in cells) + "</tr>")
    return f"<table><tr>{head}</tr>{''.join(rows)}</table>"


def _img(path: Path, alt: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f"<img alt='{_e(alt)}' src='data:image/png;base64,{data}'>"
