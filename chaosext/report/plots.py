"""matplotlib plots of the run against the outage window, returned as base64 PNGs to inline in the HTML."""
from __future__ import annotations

import base64
import io
from datetime import UTC, datetime
from itertools import pairwise
from typing import Any, TypedDict

import matplotlib

matplotlib.use("Agg")  # no display; must precede pyplot
import matplotlib.dates as mdates
import matplotlib.pyplot as plt
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import PercentFormatter

__all__ = ["Plot", "make_plots", "CACHE_STATES", "WINDOW_COLOURS"]

CACHE_STATES = ("fresh", "stale", "expired", "empty")
#: Shaded bands of the experiment's windows (the outage band is the fault itself).
WINDOW_COLOURS = {"baseline": "#1f77b4", "outage": "#ff7f0e", "recovery": "#2ca02c"}
ALERT_COLOURS = {"pending": "#f2b233", "firing": "#d62728"}
#: Every figure has the same size and plot-area margins, so the time axes line up from one plot to the next.
FIGSIZE, MARGINS = (11, 3.2), {"left": 0.08, "right": 0.78, "top": 0.88, "bottom": 0.2}
EVENT_STYLE = {"auth.degraded": ("#d62728", "v"), "auth.recovered": ("#2ca02c", "^"), "auth.expired": ("#000000", "x")}


class Plot(TypedDict):
    """One plot of the report."""

    key: str
    title: str
    #: base64 PNG, "" when there was no data
    png: str
    #: why there is no PNG, or, beside one, what it cannot show for this target ("" when nothing is missing)
    note: str


def _dt(ts: float) -> float:
    """Unix seconds as a position on the date axis (matplotlib's date number); :func:`_figure` makes the x axis a UTC
    date axis, as plotting datetimes would."""
    return float(mdates.date2num(datetime.fromtimestamp(ts, tz=UTC)))  # type: ignore[no-untyped-call]  # unannotated


def _series(matrix: list[dict[str, Any]], label_key: str = "service") -> list[tuple[str, list[float], list[float]]]:
    out = []
    for item in matrix:
        xs, ys = [], []
        for ts, value in item.get("values", []):
            try:
                number = float(value)
            except (TypeError, ValueError):
                continue
            if number != number:  # NaN: no traffic in that step
                continue
            xs.append(_dt(float(ts)))
            ys.append(number)
        if xs:
            out.append((item.get("metric", {}).get(label_key, "all"), xs, ys))
    return sorted(out, key=lambda s: s[0])


def _figure(title: str, ylabel: str) -> tuple[Figure, Axes]:
    fig, ax = plt.subplots(figsize=FIGSIZE, dpi=90)
    ax.set_title(title, loc="left", fontsize=12)
    ax.set_ylabel(ylabel)
    ax.grid(True, alpha=0.3)
    ax.xaxis.axis_date(tz=UTC)  # date locator for the date numbers of _dt
    # matplotlib.dates has no annotations (matplotlib 3.11): the two ignores of this module
    ax.xaxis.set_major_formatter(mdates.DateFormatter("%H:%M:%S", tz=UTC))  # type: ignore[no-untyped-call]
    ax.set_xlabel("time (UTC)")
    return fig, ax


def _decorate(ax: Axes, window: tuple[float, float] | None, events: list[dict[str, Any]],
              span: tuple[float, float] | None, windows: dict[str, tuple[float, float]] | None = None) -> None:
    """Shade the baseline/outage/recovery windows, draw audit events as vertical lines, fix the x range (the same on
    every plot), add the legend."""
    bands = dict(windows or {})
    if window and "outage" not in bands:
        bands["outage"] = window
    for name, (start, end) in sorted(bands.items(), key=lambda kv: kv[1][0]):
        label = "JWKS outage" if name == "outage" else name
        ax.axvspan(_dt(start), _dt(end), color=WINDOW_COLOURS.get(name, "#7f7f7f"),
                   alpha=0.15 if name == "outage" else 0.08, label=label)
    seen = set()
    for event in events:
        color, _marker = EVENT_STYLE.get(event["action"], ("#7f7f7f", "o"))
        first = event["action"] not in seen
        seen.add(event["action"])
        ax.axvline(_dt(event["ts"]), color=color, linestyle="--", linewidth=0.9, alpha=0.7,
                   label=event["action"] if first else None)
    if span:
        pad = max(1.0, 0.03 * (span[1] - span[0]))
        ax.set_xlim(_dt(span[0] - pad), _dt(span[1] + pad))
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, framealpha=0.9, borderaxespad=0)


def _png(fig: Figure) -> str:
    buf = io.BytesIO()
    fig.subplots_adjust(**MARGINS)  # fixed margins, not tight_layout: x-axes align across the report's plots
    fig.savefig(buf, format="png")
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _line(key: str, title: str, ylabel: str, matrix: list[dict[str, Any]], window: Any, events: list[Any],
          span: Any, percent: bool = False, limit: float | None = None, limit_label: str = "",
          scale: float = 1.0, windows: Any = None, levels: dict[str, float] | None = None,
          series_label: str = "{}", why: str = "") -> Plot:
    """One line per service; ``why``: the reason this plot cannot be drawn for the target (shown instead of it)."""
    series = [(name, xs, [y * scale for y in ys]) for name, xs, ys in _series(matrix)]
    if not series:
        return {"key": key, "title": title, "png": "", "note": why or "no data for this window"}
    fig, ax = _figure(title, ylabel)
    for name, xs, ys in series:
        ax.plot(xs, ys, label=series_label.format(name), linewidth=1.6)
    if limit is not None:
        ax.axhline(limit, color="#d62728", linewidth=1, label=limit_label)
    for (label, value), style in zip((levels or {}).items(), (":", "-.", "--"), strict=False):  # 3 styles at most
        ax.axhline(value, color="#444444", linestyle=style, linewidth=1.4, label=label)
    if percent:
        ax.yaxis.set_major_formatter(PercentFormatter(1.0))
    ax.margins(y=0.15)
    ax.set_ylim(bottom=0)
    _decorate(ax, window, events, span, windows)
    return {"key": key, "title": title, "png": _png(fig), "note": ""}


def _alert_states(matrix: list[dict[str, Any]], window: Any, span: Any, windows: Any) -> Plot:
    """One row per alert name: amber while pending, red while firing (Prometheus' ALERTS series)."""
    title = "Alert states (Prometheus ALERTS): pending / firing per alert"
    rows: dict[str, dict[str, list[float]]] = {}
    for item in matrix:
        metric = item.get("metric", {})
        name, state = metric.get("alertname"), metric.get("alertstate")
        if not name or state not in ALERT_COLOURS:
            continue
        stamps = [float(ts) for ts, value in item.get("values", []) if _number(value) >= 1]
        if stamps:
            rows.setdefault(name, {}).setdefault(state, []).extend(stamps)
    if not rows:
        return {"key": "alerts", "title": title, "png": "",
                "note": "no alert was pending or firing in this window (or no alert data was recorded)"}
    names = sorted(rows)
    fig, ax = _figure(title, "")
    step = _step(matrix)
    for row, name in enumerate(names):
        for state, colour in ALERT_COLOURS.items():
            spans = _runs(sorted(rows[name].get(state, [])), step)
            if spans:
                ax.broken_barh([(_dt(a), _dt(b + step) - _dt(a)) for a, b in spans], (row - 0.3, 0.45),
                               facecolors=colour, label=state if state not in _labelled(ax) else None)
        # the name inside the plot area, above its bar: long alert names cannot push the axes out of line
        ax.text(0.005, row + 0.2, name, transform=ax.get_yaxis_transform(), fontsize=8, va="bottom")
    ax.set_yticks([])
    ax.set_ylim(-0.5, len(names) - 0.1)
    _decorate(ax, window, [], span, windows)
    return {"key": "alerts", "title": title, "png": _png(fig), "note": ""}


def _number(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return float("nan")


def _step(matrix: list[dict[str, Any]]) -> float:
    """The range query's step (smallest gap between samples), at least 1 s."""
    gaps = [float(b[0]) - float(a[0]) for item in matrix for a, b in pairwise(item.get("values", []))]
    return max(1.0, min(gaps)) if gaps else 2.0


def _runs(stamps: list[float], step: float) -> list[tuple[float, float]]:
    """Consecutive timestamps (no gap above 1.5 steps) merged into (first, last) runs."""
    runs: list[tuple[float, float]] = []
    for ts in stamps:
        if runs and ts - runs[-1][1] <= 1.5 * step:
            runs[-1] = (runs[-1][0], ts)
        else:
            runs.append((ts, ts))
    return runs


def _labelled(ax: Axes) -> set[str]:
    return set(ax.get_legend_handles_labels()[1])


def _cache_state(matrix: list[dict[str, Any]], window: Any, events: list[Any], span: Any,
                 windows: Any = None, gaps: dict[str, str] | None = None) -> Plot:
    """One step line per service: which of fresh/stale/expired/empty the JWKS cache was in. ``gaps``: service -> why
    Prometheus may hold no cache state of it; a service of them without a series is named in the plot's note."""
    title = "JWKS cache state per service"
    per_service: dict[str, dict[float, int]] = {}
    for item in matrix:
        metric = item.get("metric", {})
        state = metric.get("state")
        if state not in CACHE_STATES:
            continue
        level = CACHE_STATES.index(state)
        points = per_service.setdefault(metric.get("service", "?"), {})
        for ts, value in item.get("values", []):
            if float(value) >= 1:
                points[float(ts)] = max(points.get(float(ts), -1), level)
    missing = "; ".join(f"{name}: {why}" for name, why in sorted((gaps or {}).items())
                        if not per_service.get(name))
    if not any(per_service.values()):
        return {"key": "jwks_cache_state", "title": title, "png": "",
                "note": f"not drawn: {missing}" if missing else "no data for this window"}
    fig, ax = _figure(title, "cache state")
    offsets = {name: 0.08 * (i - (len(per_service) - 1) / 2) for i, name in enumerate(sorted(per_service))}
    for name in sorted(per_service):
        steps = sorted(per_service[name].items())
        ax.step([_dt(t) for t, _ in steps], [lvl + offsets[name] for _, lvl in steps], where="post",
                label=name, linewidth=1.8)
    ax.set_yticks(range(len(CACHE_STATES)), CACHE_STATES)
    ax.set_ylim(-0.5, len(CACHE_STATES) - 0.5)
    _decorate(ax, window, events, span, windows)
    return {"key": "jwks_cache_state", "title": title, "png": _png(fig),
            "note": f"not drawn for {missing}" if missing else ""}


def _events(events: list[dict[str, Any]], window: Any, span: Any, windows: Any = None) -> Plot:
    """Audit events (auth.degraded / recovered / expired) per service on a time axis."""
    title = "Audit events: auth.degraded / auth.recovered / auth.expired"
    if not events:
        return {"key": "audit_events", "title": title, "png": "",
                "note": "no auth.* audit events in this window (none written, or no audit file given)"}
    services = sorted({e.get("service", "?") for e in events})
    fig, ax = _figure(title, "service")
    for action, (color, marker) in EVENT_STYLE.items():
        chosen = [e for e in events if e["action"] == action]
        if chosen:
            ax.scatter([_dt(e["ts"]) for e in chosen], [services.index(e.get("service", "?")) for e in chosen],
                       color=color, marker=marker, s=70, label=f"{action} ({len(chosen)})", zorder=3)
    ax.set_yticks(range(len(services)), services)
    ax.set_ylim(-0.6, len(services) - 0.4)
    _decorate(ax, window, [], span, windows)
    return {"key": "audit_events", "title": title, "png": _png(fig), "note": ""}


def make_plots(ranges: dict[str, list[dict[str, Any]]], events: list[dict[str, Any]],
               window: tuple[float, float] | None, span: tuple[float, float] | None,
               error_rate_max: float | None = None, windows: dict[str, tuple[float, float]] | None = None,
               k6_p95_ms: dict[str, float] | None = None, notes: dict[str, str] | None = None,
               cache_gaps: dict[str, str] | None = None) -> list[Plot]:
    """The report's plots, in reading order, on one time axis; a plot without data carries a note instead of a PNG.

    windows: named bands (baseline/outage/recovery) drawn on every plot; k6_p95_ms: k6's own p95 by kind (client
    side, one number for the whole k6 run) drawn as dotted levels on the latency plot beside the server's histogram;
    notes: plot key -> why it cannot be drawn for this target (``chaosext.outage.evidence.EvidencePlan``);
    cache_gaps: service -> why Prometheus may hold no cache state of it.
    """
    notes = notes or {}
    k6_levels = {f"k6 p95 {kind} (client, whole run)": ms for kind, ms in sorted((k6_p95_ms or {}).items())}
    return [
        _line("error_rate", "Error rate (5xx + 401 of real tenants) per service, sliding rate window",
              "errors / requests", ranges.get("error_rate", []), window, events, span, percent=True,
              limit=error_rate_max,
              limit_label=f"tolerance {error_rate_max:.1%}" if error_rate_max is not None else "", windows=windows),
        _line("p95_latency", "p95 latency per service: server side, from the services' histogram (lines) and k6's "
              "own p95 (horizontal levels)", "milliseconds", ranges.get("p95_latency", []), window, events, span,
              scale=1000.0, windows=windows, levels=k6_levels, series_label="{} (server)",
              why=notes.get("p95_latency", "")),
        _cache_state(ranges.get("jwks_cache_state", []), window, events, span, windows, cache_gaps),
        _alert_states(ranges.get("alerts", []), window, span, windows),
        _events(events, window, span, windows),
    ]
