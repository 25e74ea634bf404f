#!/usr/bin/env python3
"""Draws bench-results/scaling.svg from bench-results/scaling.csv (written by the `heap` bench).

Two panels against session count (10k -> 1M, log scale): GC pass time with 1% expired, and heap
bytes per session, for sessionkit and tower-sessions. Standard library only.

    python3 crates/sessionkit-bench/scripts/plot.py [csv] [svg]
"""

import csv
import math
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
CSV = sys.argv[1] if len(sys.argv) > 1 else os.path.join(HERE, "..", "bench-results", "scaling.csv")
SVG = sys.argv[2] if len(sys.argv) > 2 else os.path.join(HERE, "..", "bench-results", "scaling.svg")

rows = list(csv.DictReader(open(CSV)))
n = [int(r["sessions"]) for r in rows]


def col(name):
    return [float(r[name]) for r in rows]


W, H = 460, 320  # one panel
ML, MR, MT, MB = 64, 16, 36, 48
out = []


def panel(x0, title, series, ylabel, ylog):
    xs = [math.log10(v) for v in n]
    ys_all = [y for _, ys, _, _ in series for y in ys if y > 0]
    if ylog:
        lo, hi = math.floor(math.log10(min(ys_all))), math.ceil(math.log10(max(ys_all)))
        ty = lambda y: (math.log10(y) - lo) / (hi - lo)
        ticks = [10**e for e in range(lo, hi + 1)]
    else:
        lo, hi = 0.0, max(ys_all) * 1.45  # headroom for the legend
        ty = lambda y: (y - lo) / (hi - lo)
        step = 10 ** math.floor(math.log10(hi / 4))
        step *= 2 if hi / step > 8 else 1
        ticks = [i * step for i in range(int(hi / step) + 1)]
    xlo, xhi = min(xs), max(xs)
    px = lambda x: x0 + ML + (x - xlo) / (xhi - xlo) * (W - ML - MR)
    py = lambda y: MT + (1 - ty(y)) * (H - MT - MB)
    out.append(f'<text x="{x0 + W / 2}" y="20" text-anchor="middle" font-weight="bold">{title}</text>')
    out.append(f'<rect x="{x0 + ML}" y="{MT}" width="{W - ML - MR}" height="{H - MT - MB}" fill="none" stroke="#999"/>')
    for t in ticks:
        y = py(t)
        label = f"{t:g}"
        out.append(f'<line x1="{x0 + ML}" x2="{x0 + W - MR}" y1="{y:.1f}" y2="{y:.1f}" stroke="#eee"/>')
        out.append(f'<text x="{x0 + ML - 6}" y="{y + 4:.1f}" text-anchor="end" font-size="11">{label}</text>')
    for v in n:
        x = px(math.log10(v))
        label = f"{v // 1000}k" if v < 1_000_000 else f"{v // 1_000_000}M"
        out.append(f'<text x="{x:.1f}" y="{H - MB + 16}" text-anchor="middle" font-size="11">{label}</text>')
    out.append(f'<text x="{x0 + W / 2}" y="{H - 10}" text-anchor="middle" font-size="12">sessions</text>')
    out.append(
        f'<text x="{x0 + 14}" y="{MT + (H - MT - MB) / 2}" text-anchor="middle" font-size="12" '
        f'transform="rotate(-90 {x0 + 14} {MT + (H - MT - MB) / 2})">{ylabel}</text>'
    )
    for i, (name, ys, color, dash) in enumerate(series):
        pts = " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y in zip(xs, ys) if y > 0)
        out.append(f'<polyline points="{pts}" fill="none" stroke="{color}" stroke-width="2" stroke-dasharray="{dash}"/>')
        for x, y in zip(xs, ys):
            if y > 0:
                out.append(f'<circle cx="{px(x):.1f}" cy="{py(y):.1f}" r="3" fill="{color}"/>')
        ly = MT + 14 + 16 * i
        out.append(f'<line x1="{x0 + ML + 10}" x2="{x0 + ML + 34}" y1="{ly - 4}" y2="{ly - 4}" stroke="{color}" stroke-width="2" stroke-dasharray="{dash}"/>')
        out.append(f'<text x="{x0 + ML + 40}" y="{ly}" font-size="11">{name}</text>')


SK, TS, DM = "#1f77b4", "#d62728", "#7f7f7f"
panel(
    0,
    "GC pass, 1% expired (median ms, log)",
    [
        ("sessionkit MemoryStore::gc", col("sk_gc_ms"), SK, ""),
        ("tower-sessions layout: retain() scan*", col("tower_layout_gc_ms"), TS, ""),
        ("DashMap baseline: retain() scan", col("dashmap_gc_ms"), DM, "4 3"),
    ],
    "ms per pass",
    True,
)
panel(
    W,
    "Heap per session, 3 small values",
    [
        ("sessionkit (allocator-counted)", col("sk_bytes"), SK, ""),
        ("sessionkit (RSS growth)", col("sk_rss"), SK, "4 3"),
        ("tower-sessions (allocator-counted)", col("ts_bytes"), TS, ""),
        ("tower-sessions (RSS growth)", col("ts_rss"), TS, "4 3"),
    ],
    "bytes per session",
    False,
)
note = ("* tower-sessions' MemoryStore has no expired-session deletion; the red GC line is a retain() "
        "pass over the same HashMap&lt;Id, Record&gt; layout.")
svg = (
    f'<svg xmlns="http://www.w3.org/2000/svg" width="{2 * W}" height="{H + 24}" '
    f'font-family="sans-serif" font-size="12"><rect width="100%" height="100%" fill="white"/>'
    + "".join(out)
    + f'<text x="10" y="{H + 16}" font-size="10">{note}</text></svg>\n'
)
open(SVG, "w").write(svg)
print(f"wrote {SVG}")
