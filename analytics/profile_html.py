"""The HTML page of a :class:`analytics.profile.Profile` (``Profile.to_html``): self-contained,
inline SVG charts and CSS, no scripts, nothing fetched; and :func:`_fmt`, the short form of a
value shared with the profile's text ``repr``.
"""

from __future__ import annotations

import html
import math
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from .profile_sketches import HyperLogLog

if TYPE_CHECKING:
    from .profile import Profile

__all__ = ["render_html"]


def _fmt(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, bool):
        return str(v)
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        return f"{v:,.0f}" if v.is_integer() and abs(v) < 1e15 else f"{v:.4g}"
    if isinstance(v, pd.Timestamp):
        return v.isoformat()
    text = str(v)
    return text if len(text) <= 24 else text[:23] + "…"


_ACCENT = "#3b6fb6"
_CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;
background:#f4f6f9;color:#1d2430}
header{background:#1d2a3a;color:#fff;padding:22px 32px}
header h1{margin:0;font-size:22px;font-weight:600}
header p{margin:4px 0 0;color:#b9c6d8}
main{padding:24px 32px;max-width:1400px}
h2{font-size:17px;margin:28px 0 12px}
.card{background:#fff;border-radius:8px;box-shadow:0 1px 3px rgba(0,0,0,.12);padding:16px 18px}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(380px,1fr));gap:16px}
.card h3{margin:0 0 2px;font-size:15px;word-break:break-all}
.badge{display:inline-block;font-size:11px;padding:1px 7px;border-radius:9px;background:#e6edf7;
color:#2c4f80;margin-left:6px;vertical-align:middle}
table{border-collapse:collapse;width:100%}
th,td{text-align:left;padding:4px 8px;border-bottom:1px solid #edf0f4;font-variant-numeric:
tabular-nums;white-space:nowrap}
th{font-weight:600;color:#58657a;font-size:12px;text-transform:uppercase;letter-spacing:.03em}
td.num{text-align:right}
.stats td{padding:2px 6px;border:0}.stats td:first-child{color:#6b778a}
.cols{display:flex;gap:14px;align-items:flex-start;flex-wrap:wrap}
.note{color:#6b778a;font-size:12px;margin-top:8px}
.overview{overflow-x:auto}
svg text{font:11px system-ui,sans-serif;fill:#445066}
"""


def render_html(p: Profile) -> str:
    e = html.escape
    kinds = {}
    for c in p.columns.values():
        kinds[c["kind"]] = kinds.get(c["kind"], 0) + 1
    summary = ", ".join(f"{n} {k}" for k, n in sorted(kinds.items()))
    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        "<meta name='viewport' content='width=device-width,initial-scale=1'>",
        f"<title>Data profile</title><style>{_CSS}</style></head><body>",
        "<header><h1>Data profile</h1>",
        (
            f"<p>{p.n_rows:,} rows &middot; {len(p.columns)} columns ({e(summary)}) &middot; "
            f"{p.n_partitions} partitions</p></header><main>"
        ),
        "<h2>Overview</h2><div class='card overview'>",
        _overview_table(p),
        "</div>",
    ]
    if p.correlation.shape[0] >= 2:
        parts += [
            "<h2>Correlation (Pearson)</h2><div class='card'>",
            _svg_heatmap(p.correlation),
            "<div class='note'>Computed on rows where every numeric column is present.</div>",
            "</div>",
        ]
    parts.append("<h2>Columns</h2><div class='grid'>")
    for name, c in p.columns.items():
        parts.append(_column_card(name, c))
    parts.append("</div>")
    s = p.settings
    parts.append(
        "<p class='note'>Quantiles and histograms come from mergeable sketches: quantile rank "
        f"error at most {100 * s['rank_error_bound']:.2g}% of the rows (actual bound per column "
        "in each card, with the bound on histogram bin counts); distinct counts above "
        f"{s['max_exact_distinct']:,} are HyperLogLog estimates "
        f"(&plusmn;{100 * HyperLogLog.relative_error:.2g}% standard error). "
        "Standard deviations use ddof=1.</p></main></body></html>"
    )
    return "".join(parts)


def _overview_table(p: Profile) -> str:
    e = html.escape
    head = ["column", "type", "present", "nulls", "distinct", "mean", "std", "min", "median",
            "max"]  # fmt: skip
    rows = ["<table><tr>" + "".join(f"<th>{h}</th>" for h in head) + "</tr>"]
    for name, c in p.columns.items():
        present = 1 - c["null_fraction"]
        cells = [
            f"<td><b>{e(str(name))}</b></td>",
            f"<td>{e(c['dtype'])}</td>",
            f"<td>{_svg_fill_bar(present)} {100 * present:.1f}%</td>",
            f"<td class='num'>{_fmt(c['nulls'])}</td>",
            f"<td class='num'>{'' if c['distinct_exact'] else '≈'}{_fmt(c['distinct'])}</td>",
        ]
        for key in ("mean", "std", "min"):
            cells.append(f"<td class='num'>{e(_fmt(c.get(key)))}</td>")
        cells.append(f"<td class='num'>{e(_fmt(c.get('quantiles', {}).get(0.5)))}</td>")
        cells.append(f"<td class='num'>{e(_fmt(c.get('max')))}</td>")
        rows.append("<tr>" + "".join(cells) + "</tr>")
    rows.append("</table>")
    return "".join(rows)


def _column_card(name, c: dict) -> str:
    e = html.escape
    stats = [
        ("count", _fmt(c["count"])),
        ("nulls", f"{_fmt(c['nulls'])} ({100 * c['null_fraction']:.1f}%)"),
        ("distinct", ("" if c["distinct_exact"] else "≈") + _fmt(c["distinct"])),
    ]
    if c["kind"] == "numeric":
        stats += [("mean", _fmt(c["mean"])), ("std", _fmt(c["std"]))]
        stats += [(f"q{100 * q:g}", _fmt(v)) for q, v in c["quantiles"].items()]
    if c["kind"] in ("numeric", "datetime"):
        stats += [("min", _fmt(c["min"])), ("max", _fmt(c["max"]))]
    table = "<table class='stats'>" + "".join(
        f"<tr><td>{e(k)}</td><td class='num'>{e(v)}</td></tr>" for k, v in stats
    ) + "</table>"  # fmt: skip
    if c["kind"] == "numeric" and c["count"]:
        chart = _svg_histogram(c["histogram"]["edges"], c["histogram"]["counts"], c["quantiles"])
        note = (
            f"rank error &le; {100 * c['quantile_rank_error']:.2g}%, "
            f"bin counts &plusmn;{c['histogram']['count_error']:,}"
        )
    elif c["top"] and c["top"][0][1] > 1:
        chart = _svg_top_values(c["top"], c["count"])
        note = "most frequent values" + ("" if c["top_exact"] else f" (counts &ge; true &minus; "
                                         f"{c['top_count_error']:,})")  # fmt: skip
    elif c["count"]:
        chart, note = "<p class='note'>no value repeats often enough to chart</p>", ""
    else:
        chart, note = "<p class='note'>no values</p>", ""
    return (
        f"<div class='card'><h3>{e(str(name))}<span class='badge'>{e(c['dtype'])}</span></h3>"
        f"<div class='cols'>{table}<div>{chart}<div class='note'>{note}</div></div></div></div>"
    )


def _svg_fill_bar(fraction: float, width: int = 70, height: int = 9) -> str:
    w = max(0.0, min(1.0, fraction)) * width
    return (
        f"<svg width='{width}' height='{height}' style='vertical-align:middle'>"
        f"<rect width='{width}' height='{height}' rx='2' fill='#f2c4c4'/>"
        f"<rect width='{w:.1f}' height='{height}' rx='2' fill='#5fa67a'/></svg>"
    )


_LABEL_PX = 7  # width of one character of the 11 px chart font, rounded up


def _svg_histogram(edges, counts, quantiles, width: int = 360, height: int = 170) -> str:
    peak = max(counts) or 1
    # the y labels end 4 px left of the axis; 7 px per character of 11 px text leaves room
    left = max(44, 4 + _LABEL_PX * len(_fmt(peak)) + 4)
    right, top, bottom = 10, 12, 36
    pw, ph = width - left - right, height - top - bottom
    lo, hi = edges[0], edges[-1]
    span = (hi - lo) or 1.0

    def x(v):
        return left + (v - lo) / span * pw

    out = [f"<svg width='{width}' height='{height}' role='img' aria-label='histogram'>"]
    q25, q50, q75 = quantiles.get(0.25), quantiles.get(0.5), quantiles.get(0.75)
    base = top + ph
    if q25 is not None and q75 is not None:
        # a strip under the axis, not a band behind the bars: for a 0/1 column the quartiles
        # span the whole range and a band would cover the chart
        out.append(
            f"<rect x='{x(q25):.1f}' y='{base + 3}' width='{max(x(q75) - x(q25), 1):.1f}' "
            f"height='5' fill='#f0b45e'><title>interquartile range {_fmt(q25)} to "
            f"{_fmt(q75)}</title></rect>"
        )
    for a, b, n in zip(edges[:-1], edges[1:], counts, strict=True):
        h = n / peak * ph
        out.append(
            f"<rect x='{x(a) + 0.5:.1f}' y='{top + ph - h:.1f}' "
            f"width='{max(x(b) - x(a) - 1, 0.5):.1f}' height='{h:.1f}' fill='{_ACCENT}'>"
            f"<title>[{_fmt(a)}, {_fmt(b)}): {n:,}</title></rect>"
        )
    if q50 is not None:
        out.append(
            f"<line x1='{x(q50):.1f}' x2='{x(q50):.1f}' y1='{top}' y2='{top + ph}' "
            f"stroke='#d0452f' stroke-width='1.5' stroke-dasharray='4 3'>"
            f"<title>median {_fmt(q50)}</title></line>"
        )
    out += [
        f"<line x1='{left}' x2='{left + pw}' y1='{base}' y2='{base}' stroke='#8a94a6'/>",
        f"<line x1='{left}' x2='{left}' y1='{top}' y2='{base}' stroke='#8a94a6'/>",
        f"<text x='{left - 4}' y='{top + 9}' text-anchor='end'>{_fmt(peak)}</text>",
        f"<text x='{left - 4}' y='{base}' text-anchor='end'>0</text>",
        f"<text x='{left}' y='{base + 22}'>{html.escape(_fmt(lo))}</text>",
        (
            f"<text x='{left + pw / 2:.1f}' y='{base + 22}' text-anchor='middle'>"
            f"{html.escape(_fmt((lo + hi) / 2))}</text>"
        ),
        f"<text x='{left + pw}' y='{base + 22}' text-anchor='end'>{html.escape(_fmt(hi))}</text>",
        "</svg>",
    ]
    return "".join(out)


def _svg_top_values(top, total: int, width: int = 360) -> str:
    row, label_w, count_w = 20, 120, 90
    height = row * len(top) + 4
    peak = max(c for _, c in top) or 1
    bar_w = width - label_w - count_w
    out = [f"<svg width='{width}' height='{height}' role='img' aria-label='top values'>"]
    for i, (value, count) in enumerate(top):
        y = i * row + 2
        label = html.escape(_fmt(value)[:18])
        share = 100 * count / total if total else 0.0
        out.append(
            f"<g><title>{html.escape(str(value))}: {count:,} ({share:.1f}%)</title>"
            f"<text x='{label_w - 6}' y='{y + 13}' text-anchor='end'>{label}</text>"
            f"<rect x='{label_w}' y='{y + 3}' width='{max(count / peak * bar_w, 1):.1f}' "
            f"height='{row - 6}' rx='2' fill='{_ACCENT}'/>"
            f"<text x='{width - 4}' y='{y + 13}' text-anchor='end'>{count:,} "
            f"({share:.1f}%)</text></g>"
        )
    out.append("</svg>")
    return "".join(out)


def _svg_heatmap(corr: pd.DataFrame) -> str:
    names = [str(c) for c in corr.columns]
    k = len(names)
    cell = max(14, min(44, 560 // k))
    label_w = max(30, min(160, 12 + 7 * max(len(n) for n in names)))
    size = label_w + cell * k
    legend_h = 40
    width = max(size + label_w // 2, label_w + 210) + 10  # room for slanted labels, legend
    aria = "aria-label='correlation heatmap'"
    out = [f"<svg width='{width}' height='{size + legend_h}' role='img' {aria}>"]
    values = corr.to_numpy(dtype=np.float64)
    for i, row_name in enumerate(names):
        y = label_w + i * cell
        out.append(
            f"<text x='{label_w - 6}' y='{y + cell / 2 + 4:.1f}' text-anchor='end'>"
            f"{html.escape(row_name[:22])}</text>"
        )
        for j, col_name in enumerate(names):
            r = values[i, j]
            x = label_w + j * cell
            out.append(
                f"<rect x='{x}' y='{y}' width='{cell - 1}' height='{cell - 1}' "
                f"fill='{_diverging(r)}'><title>{html.escape(row_name)} / "
                f"{html.escape(col_name)}: {_fmt(float(r))}</title></rect>"
            )
            if cell >= 30 and not math.isnan(r):
                ink = "#fff" if abs(r) > 0.6 else "#1d2430"
                out.append(
                    f"<text x='{x + cell / 2:.1f}' y='{y + cell / 2 + 4:.1f}' "
                    f"text-anchor='middle' style='fill:{ink}'>{r:.2f}</text>"
                )
    short = max(len(n) for n in names) <= 3  # short names fit upright
    for j, col_name in enumerate(names):
        x = label_w + j * cell + cell / 2 + (0 if short else 4)
        style = "text-anchor='middle'" if short else ""
        angle = 0 if short else -60
        out.append(
            f"<text x='0' y='0' {style} transform='translate({x:.1f},{label_w - 6}) "
            f"rotate({angle})'>{html.escape(col_name[:22])}</text>"
        )
    y = size + 14
    for t in range(101):
        r = -1 + t / 50
        out.append(
            f"<rect x='{label_w + t * 2}' y='{y}' width='2' height='10' fill='{_diverging(r)}'/>"
        )
    out += [
        f"<text x='{label_w}' y='{y + 23}'>-1</text>",
        f"<text x='{label_w + 101}' y='{y + 23}' text-anchor='middle'>0</text>",
        f"<text x='{label_w + 202}' y='{y + 23}' text-anchor='end'>+1</text>",
        "</svg>",
    ]
    return "".join(out)


def _diverging(r: float) -> str:
    """Blue (-1) through white (0) to red (+1); grey for undefined."""
    if r is None or math.isnan(r):
        return "#d5d9e0"
    r = max(-1.0, min(1.0, float(r)))
    end = (178, 24, 43) if r > 0 else (33, 102, 172)
    t = abs(r)
    rgb = [round(255 + (c - 255) * t) for c in end]
    return "#{:02x}{:02x}{:02x}".format(*rgb)
