#!/usr/bin/env python3
"""Summarises benches/load/run.sh results: tables (summary.md, summary.json) and SVG charts.

    python3 benches/load/report.py benches/results

Reads DIR/load.csv (one row per wrk run) and DIR/machine.txt; writes DIR/summary.md,
DIR/summary.json, DIR/peers.svg (median req/s and CPU per request of every target),
DIR/sweep.svg (req/s against connections) and DIR/sweep-p99.svg (p99 against connections).
Standard library only; the SVG is written by hand.
"""

import csv
import json
import math
import statistics
import sys
from pathlib import Path

ORDER = ["gateway", "passthrough", "nginx", "haproxy"]
COLOURS = {
    "gateway": "#d9480f",
    "passthrough": "#1c7ed6",
    "nginx": "#2b8a3e",
    "haproxy": "#7048e8",
    "gateway (cold token)": "#f08c00",
    "passthrough (cold script)": "#74c0fc",
}
LABELS = {
    "gateway": "upload-gateway (finish path, cached RS256 token)",
    "passthrough": "bare Pingora passthrough",
    "nginx": "nginx proxy_pass (keepalive)",
    "haproxy": "HAProxy 2.6 + jwt_verify RS256",
}


def load(directory):
    with open(directory / "load.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    for row in rows:
        for key in ("requests", "conns", "non2xx", "socket_errors", "round"):
            row[key] = int(row[key])
        for key in ("rps", "p50_us", "p75_us", "p90_us", "p99_us", "cpu_us_per_req", "cpu_util",
                    "upstream_cpu_us_per_req", "server_core_busy", "client_core_busy", "duration_s"):
            row[key] = float(row[key]) if row.get(key) not in (None, "") else 0.0
    return rows


def median_of(rows, key):
    return statistics.median(r[key] for r in rows) if rows else None


def summarise(rows, phase, target):
    sel = [r for r in rows if r["phase"] == phase and r["target"] == target]
    if not sel:
        return None
    return {
        "runs": len(sel),
        "rps": median_of(sel, "rps"),
        "rps_min": min(r["rps"] for r in sel),
        "rps_max": max(r["rps"] for r in sel),
        "p50_us": median_of(sel, "p50_us"),
        "p99_us": median_of(sel, "p99_us"),
        "cpu_us_per_req": median_of(sel, "cpu_us_per_req"),
        "cpu_util": median_of(sel, "cpu_util"),
        "upstream_cpu_us_per_req": median_of(sel, "upstream_cpu_us_per_req"),
        "server_core_busy": median_of(sel, "server_core_busy"),
        "client_core_busy": median_of(sel, "client_core_busy"),
        "non2xx": sum(r["non2xx"] for r in sel),
        "socket_errors": sum(r["socket_errors"] for r in sel),
        "notes": sorted({r["note"] for r in sel if r["note"]}),
    }


def fmt(value, digits=0):
    if value is None:
        return "–"
    return f"{value:,.{digits}f}"


def ms(us):
    return "–" if us is None else (f"{us / 1000:.2f} ms" if us >= 1000 else f"{us:.0f} µs")


# ------------------------------------------------------------------ SVG helpers

def esc(text):
    return str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


class Svg:
    def __init__(self, width, height):
        self.w, self.h = width, height
        self.parts = []

    def add(self, s):
        self.parts.append(s)

    def text(self, x, y, s, size=12, anchor="start", weight="normal", colour="#222", rotate=None):
        tr = f' transform="rotate({rotate} {x:.1f} {y:.1f})"' if rotate is not None else ""
        self.add(f'<text x="{x:.1f}" y="{y:.1f}" font-size="{size}" text-anchor="{anchor}" '
                 f'font-weight="{weight}" fill="{colour}"{tr}>{esc(s)}</text>')

    def line(self, x1, y1, x2, y2, colour="#ccc", width=1, dash=None):
        d = f' stroke-dasharray="{dash}"' if dash else ""
        self.add(f'<line x1="{x1:.1f}" y1="{y1:.1f}" x2="{x2:.1f}" y2="{y2:.1f}" '
                 f'stroke="{colour}" stroke-width="{width}"{d}/>')

    def rect(self, x, y, w, h, colour):
        self.add(f'<rect x="{x:.1f}" y="{y:.1f}" width="{max(w, 0):.1f}" height="{max(h, 0):.1f}" fill="{colour}"/>')

    def render(self):
        return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{self.w}" height="{self.h}" '
                f'viewBox="0 0 {self.w} {self.h}" font-family="DejaVu Sans, Helvetica, Arial, sans-serif">\n'
                f'<rect width="100%" height="100%" fill="white"/>\n' + "\n".join(self.parts) + "\n</svg>\n")


def nice_max(v):
    if v <= 0:
        return 1
    exp = 10 ** math.floor(math.log10(v))
    for m in (1, 1.2, 1.5, 2, 2.5, 3, 4, 5, 6, 8, 10):
        if m * exp >= v:
            return m * exp
    return 10 * exp


def hbar_panel(svg, x0, y0, width, items, title, unit, digits=0):
    """Horizontal bars: items = [(label, value, colour)]."""
    svg.text(x0, y0, title, size=13, weight="bold")
    top = y0 + 14
    label_w = 300
    bar_h, gap = 22, 8
    vmax = nice_max(max(v for _, v, _ in items))
    plot_w = width - label_w - 80
    for i in range(6):
        x = x0 + label_w + plot_w * i / 5
        svg.line(x, top, x, top + len(items) * (bar_h + gap), colour="#eee")
        svg.text(x, top + len(items) * (bar_h + gap) + 14, fmt(vmax * i / 5, 0 if vmax >= 10 else 1),
                 size=10, anchor="middle", colour="#666")
    for i, (label, value, colour) in enumerate(items):
        y = top + i * (bar_h + gap)
        svg.text(x0 + label_w - 8, y + bar_h * 0.7, label, size=11, anchor="end")
        svg.rect(x0 + label_w, y, plot_w * value / vmax, bar_h, colour)
        svg.text(x0 + label_w + plot_w * value / vmax + 5, y + bar_h * 0.7, f"{fmt(value, digits)} {unit}", size=11)
    return top + len(items) * (bar_h + gap) + 30


def peers_svg(summary):
    items_rps, items_cpu, items_p99 = [], [], []
    for name, s in summary:
        colour = COLOURS.get(name, "#555")
        label = LABELS.get(name, name)
        items_rps.append((label, s["rps"], colour))
        items_cpu.append((label, s["cpu_us_per_req"], colour))
        items_p99.append((label, s["p99_us"] / 1000, colour))
    height = 34 + 3 * (len(items_rps) * 30 + 44)
    svg = Svg(900, height)
    y = 24
    y = hbar_panel(svg, 20, y, 900, items_rps, "Median throughput (req/s, higher is better)", "req/s")
    y = hbar_panel(svg, 20, y, 900, items_cpu, "Target CPU per request (µs, lower is better)", "µs", 1)
    hbar_panel(svg, 20, y, 900, items_p99, "p99 latency (ms, lower is better)", "ms", 2)
    return svg.render()


def line_chart(series, title, ylabel, log_y=False, fmt_y=lambda v: fmt(v),
               xlabel="concurrent connections (wrk -t1 -cN, log scale)"):
    """series = {name: [(x, value)]}; x is on a log2 scale (connections, cached tokens)."""
    w, h = 860, 420
    left, right, top, bottom = 80, 220, 40, 60
    svg = Svg(w, h)
    svg.text(left, 24, title, size=14, weight="bold")
    xs = sorted({c for pts in series.values() for c, _ in pts})
    ys = [v for pts in series.values() for _, v in pts if v > 0]
    if not xs or not ys:
        return svg.render()
    lx = [math.log2(max(c, 1)) for c in xs]
    x_lo, x_hi = min(lx), max(lx)
    if x_hi == x_lo:
        x_hi = x_lo + 1
    pw, ph = w - left - right, h - top - bottom

    def px(c):
        return left + pw * (math.log2(max(c, 1)) - x_lo) / (x_hi - x_lo)

    if log_y:
        y_lo = 10 ** math.floor(math.log10(min(ys)))
        y_hi = 10 ** math.ceil(math.log10(max(ys)))

        def py(v):
            return top + ph * (1 - (math.log10(v) - math.log10(y_lo)) / (math.log10(y_hi) - math.log10(y_lo)))

        ticks = []
        t = y_lo
        while t <= y_hi * 1.0001:
            ticks.append(t)
            t *= 10
    else:
        y_lo, y_hi = 0, nice_max(max(ys))

        def py(v):
            return top + ph * (1 - v / y_hi)

        ticks = [y_hi * i / 5 for i in range(6)]
    for t in ticks:
        svg.line(left, py(t), left + pw, py(t), colour="#eee")
        svg.text(left - 6, py(t) + 4, fmt_y(t), size=10, anchor="end", colour="#666")
    for c in xs:
        svg.line(px(c), top, px(c), top + ph, colour="#f3f3f3")
        svg.text(px(c), top + ph + 16, str(c), size=10, anchor="middle", colour="#666")
    svg.line(left, top + ph, left + pw, top + ph, colour="#999")
    svg.line(left, top, left, top + ph, colour="#999")
    svg.text(left + pw / 2, h - 18, xlabel, size=11, anchor="middle")
    svg.text(18, top + ph / 2, ylabel, size=11, anchor="middle", rotate=-90)
    for i, (name, pts) in enumerate(series.items()):
        colour = COLOURS.get(name, "#555")
        pts = sorted(p for p in pts if p[1] > 0)
        path = " ".join(f"{'M' if j == 0 else 'L'}{px(c):.1f},{py(v):.1f}" for j, (c, v) in enumerate(pts))
        svg.add(f'<path d="{path}" fill="none" stroke="{colour}" stroke-width="2.5"/>')
        for c, v in pts:
            svg.add(f'<circle cx="{px(c):.1f}" cy="{py(v):.1f}" r="3.5" fill="{colour}"/>')
        ly = top + 10 + i * 20
        svg.rect(left + pw + 16, ly - 8, 14, 4, colour)
        svg.text(left + pw + 36, ly - 2, name, size=11)
    return svg.render()


# ------------------------------------------------------------------ main

def main():
    directory = Path(sys.argv[1] if len(sys.argv) > 1 else "benches/results")
    rows = load(directory)
    machine = (directory / "machine.txt").read_text() if (directory / "machine.txt").exists() else ""
    targets = [t for t in ORDER if any(r["target"] == t for r in rows)]
    out = {"machine": machine, "main": {}, "logging": None, "cold": {}, "sweep": {}, "profile": None}
    md = []

    main_s = [(t, summarise(rows, "main", t)) for t in targets]
    main_s = [(t, s) for t, s in main_s if s]
    base = dict(main_s).get("passthrough")
    if main_s:
        md.append("### Peers at c=%d (median of %d rounds)\n" % (
            next(r["conns"] for r in rows if r["phase"] == "main"), main_s[0][1]["runs"]))
        md.append("| target | req/s (median) | min–max | × passthrough | p50 | p99 | CPU µs/req | × passthrough CPU | target process CPU | core 0 / core 1 busy | upstream µs/req |")
        md.append("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
        for t, s in main_s:
            ratio = s["rps"] / base["rps"] if base else None
            cpu_ratio = s["cpu_us_per_req"] / base["cpu_us_per_req"] if base else None
            s["ratio_vs_passthrough"] = ratio
            s["cpu_ratio_vs_passthrough"] = cpu_ratio
            md.append(f"| {t} | {fmt(s['rps'])} | {fmt(s['rps_min'])}–{fmt(s['rps_max'])} | "
                      f"{fmt(ratio, 2)} | {ms(s['p50_us'])} | {ms(s['p99_us'])} | {fmt(s['cpu_us_per_req'], 1)} | "
                      f"{fmt(cpu_ratio, 2)} | {fmt(s['cpu_util'] * 100)} % | "
                      f"{fmt(s['server_core_busy'] * 100)} % / {fmt(s['client_core_busy'] * 100)} % | "
                      f"{fmt(s['upstream_cpu_us_per_req'], 1)} |")
            out["main"][t] = s
        (directory / "peers.svg").write_text(peers_svg(main_s))
        md.append("")

    logging_s = summarise(rows, "logging", "gateway")
    gw = dict(main_s).get("gateway")
    if logging_s and gw:
        out["logging"] = logging_s
        md.append("### Logging cost (gateway, one round)\n")
        md.append("| RUST_LOG | req/s | × warn | p50 | p99 | CPU µs/req |")
        md.append("| --- | ---: | ---: | ---: | ---: | ---: |")
        md.append(f"| warn (median of main) | {fmt(gw['rps'])} | 1.00 | {ms(gw['p50_us'])} | {ms(gw['p99_us'])} | {fmt(gw['cpu_us_per_req'], 1)} |")
        md.append(f"| info (access log, JSON, to a file) | {fmt(logging_s['rps'])} | {fmt(logging_s['rps'] / gw['rps'], 2)} | "
                  f"{ms(logging_s['p50_us'])} | {ms(logging_s['p99_us'])} | {fmt(logging_s['cpu_us_per_req'], 1)} |")
        md.append("")

    cold_gw = summarise(rows, "cold", "gateway")
    cold_pt = summarise(rows, "cold", "passthrough")
    cold_ha = summarise(rows, "cold", "haproxy")
    if cold_gw:
        out["cold"] = {"gateway": cold_gw, "passthrough": cold_pt, "haproxy": cold_ha}
        md.append("### Cold token (a different valid token on every request; median of %d rounds)\n" % cold_gw["runs"])
        md.append("| target | req/s | × passthrough (same script) | × passthrough (main) | × HAProxy (same script) | p50 | p99 | CPU µs/req | notes |")
        md.append("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |")
        for name, s in (("gateway", cold_gw), ("passthrough", cold_pt), ("haproxy", cold_ha)):
            if not s:
                continue
            r1 = s["rps"] / cold_pt["rps"] if cold_pt else None
            r2 = s["rps"] / base["rps"] if base else None
            r3 = s["rps"] / cold_ha["rps"] if cold_ha else None
            s["ratio_vs_passthrough_same_script"] = r1
            s["ratio_vs_passthrough_main"] = r2
            s["ratio_vs_haproxy_same_script"] = r3
            notes = "; ".join(dict.fromkeys(s["notes"]))
            md.append(f"| {name} | {fmt(s['rps'])} | {fmt(r1, 2)} | {fmt(r2, 2)} | {fmt(r3, 2)} | {ms(s['p50_us'])} | "
                      f"{ms(s['p99_us'])} | {fmt(s['cpu_us_per_req'], 1)} | {notes} |")
        md.append("")

    sweep_rows = [r for r in rows if r["phase"] == "sweep"]
    if sweep_rows:
        conns = sorted({r["conns"] for r in sweep_rows})
        md.append("### Concurrency sweep (one run per point)\n")
        md.append("| target | " + " | ".join(f"c={c} req/s" for c in conns) + " | " +
                  " | ".join(f"c={c} p99" for c in conns) + " |")
        md.append("| --- | " + " | ".join("---:" for _ in conns * 2) + " |")
        rps_series, p99_series = {}, {}
        for t in targets:
            pts = {r["conns"]: r for r in sweep_rows if r["target"] == t}
            if not pts:
                continue
            rps_series[t] = [(c, pts[c]["rps"]) for c in conns if c in pts]
            p99_series[t] = [(c, pts[c]["p99_us"] / 1000) for c in conns if c in pts]
            out["sweep"][t] = {str(c): {k: pts[c][k] for k in ("rps", "p50_us", "p99_us", "cpu_us_per_req")}
                               for c in conns if c in pts}
            md.append(f"| {t} | " + " | ".join(fmt(pts[c]["rps"]) if c in pts else "–" for c in conns) + " | " +
                      " | ".join(ms(pts[c]["p99_us"]) if c in pts else "–" for c in conns) + " |")
        md.append("")
        (directory / "sweep.svg").write_text(line_chart(rps_series, "Throughput against concurrency", "req/s"))
        (directory / "sweep-p99.svg").write_text(line_chart(
            p99_series, "p99 latency against concurrency", "p99 latency (ms, log scale)", log_y=True,
            fmt_y=lambda v: f"{v:g}"))

    memory = directory / "memory.csv"
    if memory.exists():
        with open(memory, newline="") as f:
            mem = [{k: int(v) for k, v in row.items()} for row in csv.DictReader(f)]
        if mem:
            out["memory"] = mem
            md.append("### Token-cache memory (RSS growth over the warm gateway / cached tokens)\n")
            md.append("| distinct tokens | cached | RSS warm | RSS after | bytes per cached token | seconds |")
            md.append("| ---: | ---: | ---: | ---: | ---: | ---: |")
            for m in mem:
                md.append(f"| {fmt(m['tokens'])} | {fmt(m['cached_entries'])} | {fmt(m['rss_warm_kib'] / 1024, 1)} MiB | "
                          f"{fmt(m['rss_after_kib'] / 1024, 1)} MiB | {m['bytes_per_entry']} | {m['seconds']} |")
            md.append("")
            (directory / "memory.svg").write_text(line_chart(
                {"gateway": [(m["cached_entries"], m["bytes_per_entry"]) for m in mem]},
                "RSS per cached token against cached tokens", "bytes of RSS per cached token",
                xlabel="distinct cached tokens (log scale)"))
            (directory / "memory-total.svg").write_text(line_chart(
                {"gateway": [(m["cached_entries"], (m["rss_after_kib"]) / 1024) for m in mem]},
                "Gateway RSS against cached tokens", "RSS (MiB, log scale)", log_y=True,
                fmt_y=lambda v: f"{v:g}", xlabel="distinct cached tokens (log scale)"))

    prof = summarise(rows, "profile", "gateway")
    if prof:
        out["profile"] = prof

    fails = [r for r in rows if r["non2xx"]]
    md.append("Non-2xx responses: " + ("none" if not fails else ", ".join(
        f"{r['target']} {r['phase']} r{r['round']} c={r['conns']}: {r['non2xx']}" for r in fails)) +
        "; socket errors: " + str(sum(r["socket_errors"] for r in rows)) + ".")
    (directory / "summary.md").write_text("\n".join(md) + "\n")
    (directory / "summary.json").write_text(json.dumps(out, indent=2) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
