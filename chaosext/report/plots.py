"""matplotlib plots of the run against the outage window, returned as base64 PNGs to inline in the HTML."""
from __future__ import annotations

import base64
import io
from datetime import datetime, timezone
from typing import Any

import matplotlib

matplotlib.use("Agg")  # no display; must precede pyplot
import matplotlib.dates as mdates  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import PercentFormatter  # noqa: E402

__all__ = ["Plot", "make_plots", "CACHE_STATES"]

CACHE_STATES = ("fresh", "stale", "expired", "empty")
EVENT_STYLE = {"auth.degraded": ("#d62728", "v"), "auth.recovered": ("#2ca02c", "^"), "auth.expired": ("#000000", "x")}
Plot = dict[str, str]  # {"key", "title", "png" (base64, "" when no data), "note"}


def _dt(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, tz=timezone.utc)


def _series(matrix: list[dict[str, Any]], label_key: str = "service") -> list[tuple[str, list[datetime], list[float]]]:
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


def _figure(title: str, ylabel: str) -> tuple[Any, Any]:
    fig, ax = plt.subplots(figsize=(11, 3.2), dpi=90)
    ax.set_title(title, loc="left", fontsize=12)
    ax.set_ylabel(ylabel)
    ax.grid(True, alpha=0.3)
    ax.xaxis.set_major_formatter(mdates.DateFormatter("%H:%M:%S", tz=timezone.utc))
    ax.set_xlabel("time (UTC)")
    return fig, ax


def _decorate(ax: Any, window: tuple[float, float] | None, events: list[dict[str, Any]],
              span: tuple[float, float] | None) -> None:
    """Shade the outage window, draw audit events as vertical lines, fix the x range, add the legend."""
    if window:
        ax.axvspan(_dt(window[0]), _dt(window[1]), color="#ff7f0e", alpha=0.15, label="JWKS outage")
    seen = set()
    for event in events:
        color, _marker = EVENT_STYLE.get(event["action"], ("#7f7f7f", "o"))
        label = event["action"] if event["action"] not in seen else None
        seen.add(event["action"])
        ax.axvline(_dt(event["ts"]), color=color, linestyle="--", linewidth=0.9, alpha=0.7, label=label)
    if span:
        pad = max(1.0, 0.03 * (span[1] - span[0]))
        ax.set_xlim(_dt(span[0] - pad), _dt(span[1] + pad))
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, framealpha=0.9, borderaxespad=0)


def _png(fig: Any) -> str:
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _line(key: str, title: str, ylabel: str, matrix: list[dict[str, Any]], window: Any, events: list[Any],
          span: Any, percent: bool = False, limit: float | None = None, limit_label: str = "",
          scale: float = 1.0) -> Plot:
    series = [(name, xs, [y * scale for y in ys]) for name, xs, ys in _series(matrix)]
    if not series:
        return {"key": key, "title": title, "png": "", "note": "no data for this window"}
    fig, ax = _figure(title, ylabel)
    for name, xs, ys in series:
        ax.plot(xs, ys, label=name, linewidth=1.6)
    if limit is not None:
        ax.axhline(limit, color="#d62728", linewidth=1, label=limit_label)
    if percent:
        ax.yaxis.set_major_formatter(PercentFormatter(1.0))
    ax.set_ylim(bottom=0)
    _decorate(ax, window, events, span)
    return {"key": key, "title": title, "png": _png(fig), "note": ""}


def _cache_state(matrix: list[dict[str, Any]], window: Any, events: list[Any], span: Any) -> Plot:
    """One step line per service: which of fresh/stale/expired/empty the JWKS cache was in."""
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
    if not any(per_service.values()):
        return {"key": "jwks_cache_state", "title": title, "png": "", "note": "no data for this window"}
    fig, ax = _figure(title, "cache state")
    offsets = {name: 0.08 * (i - (len(per_service) - 1) / 2) for i, name in enumerate(sorted(per_service))}
    for name in sorted(per_service):
        points = sorted(per_service[name].items())
        ax.step([_dt(t) for t, _ in points], [lvl + offsets[name] for _, lvl in points], where="post",
                label=name, linewidth=1.8)
    ax.set_yticks(range(len(CACHE_STATES)), CACHE_STATES)
    ax.set_ylim(-0.5, len(CACHE_STATES) - 0.5)
    _decorate(ax, window, events, span)
    return {"key": "jwks_cache_state", "title": title, "png": _png(fig), "note": ""}


def _events(events: list[dict[str, Any]], window: Any, span: Any) -> Plot:
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
    _decorate(ax, window, [], span)
    return {"key": "audit_events", "title": title, "png": _png(fig), "note": ""}


def make_plots(ranges: dict[str, list[dict[str, Any]]], events: list[dict[str, Any]],
               window: tuple[float, float] | None, span: tuple[float, float] | None,
               error_rate_max: float | None = None) -> list[Plot]:
    """The report's four plots, in reading order; a plot without data carries a note instead of a PNG."""
    return [
        _line("error_rate", "Error rate (5xx + 401) per service, sliding rate window", "errors / requests", ranges.get("error_rate", []),
              window, events, span, percent=True, limit=error_rate_max,
              limit_label=f"tolerance {error_rate_max:.1%}" if error_rate_max is not None else ""),
        _line("p95_latency", "p95 latency per service", "milliseconds", ranges.get("p95_latency", []), window,
              events, span, scale=1000.0),
        _cache_state(ranges.get("jwks_cache_state", []), window, events, span),
        _events(events, window, span),
    ]
