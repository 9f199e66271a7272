"""The study report: one self-contained HTML file (images embedded as base64) per study.

It opens with THE best configuration (stages.best_configuration: the one
`search` names and `final` tests), described as every command describes it,
with its stage and trials, as TOML and JSON ready to paste, and the stored result of `hpsearch final`
(final.py: each tested configuration's test metric, the ensemble's, the
weights file, how many times the test split was evaluated). Then for each stage, in lineage order
(coarse -> refine-1 -> ...): its settings and where they come from (the study
file, flags, or search's plan; re-runs counted apart), its space and, for refine stages,
how it was derived from its parent (old range -> new range, why); the border
flags; the leaderboard (top rows, with the diagnostics columns; wide tables
scroll sideways); the metric against each parameter, three plots to a row
(log axes for log ranges, searched range dotted, border zone - the outer 10%
- shaded; a box and the points per value for string params); the loss curves
of its top trials; and every failed trial with its reason and the last lines
of its output. The page fits a phone: tables and plots scroll sideways
inside their own box, the page itself never does.
"""

from __future__ import annotations

import base64
import html
import json
import math
import re
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from optuna.trial import FrozenTrial, TrialState

from hpsearch.errors import HpsearchError
from hpsearch.leaderboard import frame
from hpsearch.repeats import Configuration
from hpsearch.search.coordinator import stage_flags
from hpsearch.search.final import stored_final, summary
from hpsearch.search.stages import best_configuration
from hpsearch.space import fmt
from hpsearch.store.storage import StageInfo, Store, results_dir
from hpsearch.trials import CURVES_ATTR, LOG_TAIL_ATTR, REASON_ATTR, REPEAT_ATTR, ranked_trials, trial_attr

REPORT_FILE = "report.html"
CURVES_TOP = 5  # more lines than this make the curves plot unreadable

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; padding: 0 0.8em; max-width: 1150px; color: #222; }
h1, h2, p, li { overflow-wrap: anywhere; } h1 { margin-bottom: 0.2em; }
h2 { border-bottom: 2px solid #ccc; padding-bottom: 0.2em; margin-top: 2em; }
table { border-collapse: collapse; font-size: 0.85em; margin: 0.6em 0; }
th, td { border: 1px solid #ddd; padding: 3px 7px; text-align: right; }
th { background: #f3f3f3; } td.text, th.text { text-align: left; } td.text { min-width: 9em; }
.flag { background: #fff4d6; border-left: 4px solid #e0a800; padding: 0.4em 0.8em; margin: 0.3em 0; }
.muted { color: #666; }
.scroll { overflow-x: auto; max-width: 100%; }
.plot { overflow-x: auto; max-width: 100%; margin: 0.4em 0; }
.plot img { display: block; box-sizing: border-box; max-width: 100%; min-width: 720px; border: 1px solid #eee; }  /* min-width wins on a phone */
pre { background: #f6f6f6; padding: 0.5em 0.8em; overflow-x: auto; font-size: 0.85em; }
pre.log { max-height: 16em; overflow-y: auto; } .reason { white-space: pre-wrap; }
.failed { border-left: 4px solid #c0392b; padding: 0.1em 0.8em; margin: 0.6em 0; }
"""  # noqa: E501 - one CSS rule a line, and the page's bytes stay as they were
VIEWPORT = "<meta name='viewport' content='width=device-width, initial-scale=1'>"  # a phone lays it out at its width


def build_report(store: Store, directory: str | Path | None = None, top: int = 10) -> Path:
    """Write the study's report.html into its results folder and return the path.

    Raises StudyNotFound when the study has no stage yet.
    """
    stages = store.stages()
    if not stages:
        store.stage(None)  # raises StudyNotFound with the usual advice
    spec = stages[-1].spec
    lineage = " → ".join(s.name for s in stages)
    trials = [store.trials(info) for info in stages]  # read once: on PostgreSQL reading is most of the time
    parts = [
        f"<h1>{_e(spec.name)}</h1>",
        f"<p class='muted'>workload <code>{_e(str(spec.workload))}</code> · {_e(spec.direction.value)} "
        f"<b>{_e(spec.metric)}</b> · stages: {_e(lineage)}</p>",
        _best_section(spec, best_configuration(store), stages, trials),
        _final_section(stored_final(store)),
    ]
    with tempfile.TemporaryDirectory() as tmp:
        for info, stage_trials in zip(stages, trials):
            parts.append(_stage_section(info, stage_trials, Path(tmp), top, _plan(store, info)))
    body = "\n".join(parts)
    page = (
        f"<!DOCTYPE html>\n<html><head><meta charset='utf-8'>{VIEWPORT}<title>{_e(spec.name)}: hpsearch report</title>"
        f"<style>{STYLE}</style></head><body>\n{body}\n</body></html>\n"
    )
    path = results_dir(directory) / spec.name / REPORT_FILE
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(page, encoding="utf-8")
    except OSError as e:
        raise HpsearchError(f"cannot write the report {path}: {e.strerror}") from None
    return path


def _best_section(
    spec: Any,
    found: tuple[StageInfo, Configuration] | None,
    stages: Sequence[StageInfo],
    trials: Sequence[Sequence[FrozenTrial]],
) -> str:
    """THE best configuration (stages.best_configuration), as `search` and `final` name it: its
    describe() line, stage and trials, then its params as TOML and JSON; and, when a single run
    scored better, which one and why it is not the best."""
    out = ["<h2>Best configuration</h2>"]
    if found is None:
        return out[0] + "\n<p>No completed trial yet, so no best configuration.</p>"
    info, best = found
    numbers = [t.number for t in best.trials]
    runs = ", ".join(f"{t.number} ({_e(f'{t.value:.4g}')})" for t in best.trials)
    which = f"trial{'s' if len(numbers) > 1 else ''} {', '.join(map(str, numbers))}"
    toml = "\n".join(
        [f"# {spec.name}: {info.name} {which}: {best.describe(spec.metric)}"]
        + [f"{_toml_key(k)} = {_toml_value(v)}" for k, v in best.params.items()]
    )
    out += [
        (
            f"<p class='best'><b>{_e(best.describe(spec.metric))}</b>: the top of the noise-aware ranking "
            f"(means over re-runs, shrunk by the measured noise) of stage <b>{_e(info.name)}</b>, the latest "
            f"with a completed trial; the configuration <code>search</code> names and <code>final</code> tests. "
            f"Its run{'s' if len(numbers) > 1 else ''}: trial{'s' if len(numbers) > 1 else ''} {runs}.</p>"
        ),
        _lucky_run(spec, info, best, stages, trials),
        "<p>Exact values, ready to paste:</p>",
        f"<pre class='toml'>{_e(toml)}</pre>",
        f"<pre class='json'>{_e(json.dumps(dict(best.params), indent=2))}</pre>",
    ]
    return "\n".join(o for o in out if o)


def _lucky_run(
    spec: Any,
    info: StageInfo,
    best: Configuration,
    stages: Sequence[StageInfo],
    trials: Sequence[Sequence[FrozenTrial]],
) -> str:
    """A line on the best single run over all stages when it is not one of the best's runs and beat their mean."""
    stage_of = {id(t): s for s, stage_trials in zip(stages, trials) for t in stage_trials}
    ranked = ranked_trials([t for stage_trials in trials for t in stage_trials], spec.direction)
    if not ranked:
        return ""
    top, where = ranked[0], stage_of[id(ranked[0])]
    among_best = where.name == info.name and top.number in {t.number for t in best.trials}
    if among_best or spec.direction.gain(top.value, best.mean) <= 0:
        return ""
    why = (
        "a lone run is the noisiest estimate, so the ranking pulls it toward the stage's mean"
        if where.name == info.name
        else f"it is from {where.name} ({where.settings.epochs} epochs); the best comes from the latest stage"
    )
    return (
        f"<p class='muted'>One run scored higher: {_e(where.name)} trial {top.number}, {_e(spec.metric)} "
        f"{_e(f'{top.value:.4f}')}. It is not the best configuration: {_e(why)}.</p>"
    )


def _final_section(data: dict[str, Any] | None) -> str:
    """The stored final result: one line, then a row per tested configuration (and the ensemble's)."""
    if data is None:
        return (
            "<h2>Final test</h2>\n"
            "<p class='muted'>Not tested yet: <code>hpsearch final NAME</code> tests the best once.</p>"
        )
    rows: list[tuple[Any, ...]] = [
        (
            e["rank"],
            "failed"
            if e["mean"] is None
            else f"{e['mean']:.4f}" + (f" ± {e['spread']:.4f}" if e["spread"] is not None else ""),
            len(e["runs"]),
            f"{e['val_mean']:.4f} ({e['val_n']})",
            " ".join(f"{k}={fmt(v)}" for k, v in e["params"].items()),
        )
        for e in data["configs"]
    ]
    ensemble = data.get("ensemble")
    if ensemble and ensemble["value"] is not None:
        rows.append(
            (
                "ensemble",
                f"{ensemble['value']:.4f}",
                f"{ensemble['runs']} averaged",
                "",
                f"the top {ensemble['k']}, averaged prediction",
            )
        )
    weights = data.get("weights")
    saved = f" Weights of the best run (seed {weights['seed']}): <code>{_e(weights['file'])}</code>." if weights else ""
    metric = data["metric"]
    return "\n".join(
        [
            "<h2>Final test</h2>",
            f"<p class='final'>{_e(summary(data))}.{saved}</p>",
            _table(("rank", f"test {metric}", "seeds", f"val {metric} (n)", "params"), rows),
        ]
    )


def _toml_key(key: str) -> str:
    return key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else json.dumps(key)


def _toml_value(value: Any) -> str:
    """A param value as TOML: repr keeps every digit of a float; strings as basic (JSON-escaped) strings."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value) or math.isinf(value):
            return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
        return repr(value)
    return json.dumps(str(value), ensure_ascii=False)


def _failed_section(trials: Sequence[FrozenTrial]) -> str:
    """Every failed trial of a stage: number, params, reason, and the last lines of its output when kept."""
    failed = [t for t in trials if t.state == TrialState.FAIL]
    if not failed:
        return ""
    out = [f"<h3>Failed trials ({len(failed)})</h3>"]
    for t in failed:
        params = " ".join(f"{k}={fmt(v)}" for k, v in t.params.items())
        reason = t.user_attrs.get(REASON_ATTR) or "(no reason recorded)"
        block = [
            f"<div class='failed'><p><b>trial {t.number}</b> <span class='muted'>{_e(params)}</span></p>",
            f"<p class='reason'>{_e(reason)}</p>",
        ]
        tail = trial_attr(t, LOG_TAIL_ATTR)
        if tail:
            block.append(f"<p class='muted'>last lines of its output:</p><pre class='log'>{_e(tail)}</pre>")
        out.append("".join(block) + "</div>")
    return "\n".join(out)


def _plan(store: Store, info: StageInfo) -> dict[str, int] | None:
    """The plan `search` left on a stage (recipe.PLAN_ATTR); None for a stage run by `coarse` or `refine`."""
    from hpsearch.search.recipe import PLAN_ATTR

    plan = store.study(info).user_attrs.get(PLAN_ATTR)
    return plan if isinstance(plan, dict) else None


def _settings_line(info: StageInfo, trials: Sequence[FrozenTrial], plan: dict[str, int] | None) -> str:
    """Where the stage's settings come from, truthfully, and what it ran: its trials and, apart, its re-runs."""
    s = info.settings
    section = "coarse" if info.index == 0 else "refine"
    written = info.spec.coarse if info.index == 0 else info.spec.refine
    if plan is not None and info.spec.search_plan != "study":
        origin = (
            f"planned by <code>search</code> from its budget, not the study file's [{section}] as written "
            '(search_plan = "study" runs that)'
        )
    elif plan is not None:
        origin = f"the study file's [{section}], run by <code>search</code>"
    elif (written.strategy, written.trials, written.epochs) != (s.strategy, s.trials, s.epochs):
        origin = (
            f"set by flags (the study file's [{section}]: {_e(written.strategy.value)}, "
            f"{written.trials} trials × {written.epochs} epochs)"
        )
    else:
        origin = f"the study file's [{section}]"
    if info.parent:
        origin = f"derived from <b>{_e(info.parent)}</b> · {origin}"
    reruns = sum(REPEAT_ATTR in t.user_attrs for t in trials)  # queued ones too: the target holds them
    runs = f"{s.trials - reruns} trials" + (f" + {reruns} re-run{'s' if reruns != 1 else ''}" if reruns else "")
    done = ranked_trials(trials, info.spec.direction)
    done_reruns = sum(REPEAT_ATTR in t.user_attrs for t in done)
    completed = f"{len(done)} completed of {len(trials)}" + (f" ({done_reruns} of them re-runs)" if done_reruns else "")
    return (
        f"<p class='settings'>{origin} · {_e(s.strategy.value)}, {runs} × {s.epochs} epochs, seed {s.seed}, "
        f"top-k {s.top_k} · {completed}</p>"
    )


def _stage_section(
    info: StageInfo, trials: Sequence[FrozenTrial], tmp: Path, top: int, plan: dict[str, int] | None
) -> str:
    from hpsearch.report.plots import TrialCurves, plot_curves, plot_scatter

    spec = info.spec
    ranked = ranked_trials(trials, spec.direction)
    out = [f"<h2>{_e(info.name)}</h2>", _settings_line(info, trials, plan)]
    if info.changes:
        rows = [(c["param"], c["old"], c["new"], c["why"]) for c in info.changes]
        out.append(_table(("param", "old range", "new range", "why"), rows))
    else:
        out.append(_table(("param", "range"), [(p.name, p.describe()) for p in info.space]))
    flags = stage_flags(info, ranked)
    out += [f"<div class='flag'>⚠ {_e(f.message())}</div>" for f in flags]
    if not flags and ranked:
        out.append("<p class='muted'>No best value on a border.</p>")
    df = frame([info], [trials], top, runs=True)  # resumed trials' earlier runs too, linked by attempt_of
    if len(df):
        own = df.attrs.get("columns", {})  # the frame's own columns, renamed where a param took the name
        keep = [own.get(c, c) for c in ("rank", "trial", "state")] + [spec.metric, *info.space.names]
        keep += [own.get(c, c) for c in ("epochs", "border", "update_ratio", "lr_hint", "notes", "reason")]
        keep += ["attempt", "attempt_of"]  # present where a trial was resumed
        out.append(_frame_html(df[[c for c in dict.fromkeys(keep) if c in df.columns]]))
    if ranked:
        records = frame([info], [ranked]).to_dict("records")
        scatter = plot_scatter(
            records,
            info.space,
            spec.metric,
            tmp / f"{info.name}-scatter.png",
            direction=spec.direction,
            title=f"{info.name}: {spec.metric} vs each parameter",
        )
        out.append(_img(scatter, f"{spec.metric} against each parameter of {info.name}: {', '.join(info.space.names)}"))
        curves = [
            TrialCurves(t.number, info.name, rank, t.value, dict(t.params), trial_attr(t, CURVES_ATTR))
            for rank, t in enumerate(ranked, 1)
            if trial_attr(t, CURVES_ATTR)
        ][:CURVES_TOP]
        if curves:
            path = plot_curves(
                curves, tmp / f"{info.name}-curves.png", f"{info.name}: loss curves of the top {len(curves)}"
            )
            out.append(_img(path, f"loss curves of the top trials of {info.name}"))
    out.append(_failed_section(trials))
    return "\n".join(o for o in out if o)


def _e(text: Any) -> str:
    return html.escape(str(text))


def _table(header: tuple[str, ...], rows: list[tuple[Any, ...]]) -> str:
    head = "".join(f"<th class='text'>{_e(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td class='text'>{_e(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<div class='scroll'><table><tr>{head}</tr>{body}</table></div>"


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
    return f"<div class='scroll'><table><tr>{head}</tr>{''.join(rows)}</table></div>"


def _img(path: Path, alt: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f"<div class='plot'><img alt='{_e(alt)}' src='data:image/png;base64,{data}'></div>"
