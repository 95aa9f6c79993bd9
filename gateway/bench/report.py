#!/usr/bin/env python3
"""Turns the raw results of gateway/bench/run.sh into gateway/bench/REPORT.md.

Added latency is the gateway's percentile minus the direct call's percentile, per phase.
"""

import argparse
import datetime
import json
import os
import platform
from pathlib import Path

TARGET_SEQ_P99_US = 250
TARGET_2000_P99_US = 1000
TARGET_RSS_MIB = 100


def load(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def oha_stats(data):
    """(latency percentiles µs, first-byte percentiles µs, errors, ok, rps) from oha's JSON."""
    if not data:
        return None

    def us(percentiles):
        return {k: (v or 0) * 1e6 for k, v in (percentiles or {}).items()}

    statuses = {int(k): v for k, v in (data.get("statusCodeDistribution") or {}).items()}
    ok = sum(v for k, v in statuses.items() if 200 <= k < 300)
    # Requests still in flight when `-z` ends are reported as "aborted due to deadline": not errors.
    transport_errors = sum(v for k, v in (data.get("errorDistribution") or {}).items() if "deadline" not in k)
    errors = transport_errors + sum(v for k, v in statuses.items() if not 200 <= k < 300)
    latency = us(data.get("latencyPercentiles"))
    first_byte = us(data.get("firstBytePercentiles"))
    return {
        "p50": latency.get("p50"),
        "p99": latency.get("p99"),
        "fb50": first_byte.get("p50"),
        "fb99": first_byte.get("p99"),
        "errors": errors,
        "ok": ok,
        "rps": data.get("summary", {}).get("requestsPerSec") or 0,
    }


def load_stats(data):
    if not data:
        return None
    return {
        "p50": data["latency_us"]["p50"] if data.get("latency_us") else None,
        "p99": data["latency_us"]["p99"] if data.get("latency_us") else None,
        "fb50": data["first_byte_us"]["p50"] if data.get("first_byte_us") else None,
        "fb99": data["first_byte_us"]["p99"] if data.get("first_byte_us") else None,
        "errors": data.get("errors", 0),
        "ok": data.get("ok", 0),
        "rps": data.get("achieved_rps", 0),
    }


def fmt_us(value):
    if value is None:
        return "–"
    if abs(value) >= 1000:
        return f"{value / 1000:.2f} ms"
    return f"{value:.0f} µs"


def added(gateway, direct, key):
    if not gateway or not direct or gateway.get(key) is None or direct.get(key) is None:
        return None
    return gateway[key] - direct[key]


def phases(rates):
    yield "seq", "concurrency 1"
    for rate in rates:
        yield f"rate{rate}", f"{int(rate):,} req/s"


def table(results: Path, prefix: str, parse, rates, lines, summary):
    lines.append("| load | body | direct p50 / p99 | gateway p50 / p99 | **added p50 / p99** | gateway req/s | gateway errors |")
    lines.append("|---|---|---|---|---|---|---|")
    for phase, label in phases(rates):
        for mode in ("plain", "stream"):
            direct = parse(load(results / f"{prefix}{phase}-{mode}-direct.json"))
            gateway = parse(load(results / f"{prefix}{phase}-{mode}-gateway.json"))
            if not direct or not gateway:
                lines.append(f"| {label} | {mode} | (missing) | | | | |")
                continue
            # For streams the interesting number is the time to the first event (TTFT).
            p50, p99 = ("fb50", "fb99") if mode == "stream" else ("p50", "p99")
            what = "stream, TTFT" if mode == "stream" else "non-streaming"
            added50, added99 = added(gateway, direct, p50), added(gateway, direct, p99)
            lines.append(
                f"| {label} | {what} | {fmt_us(direct[p50])} / {fmt_us(direct[p99])} | "
                f"{fmt_us(gateway[p50])} / {fmt_us(gateway[p99])} | **{fmt_us(added50)} / {fmt_us(added99)}** | "
                f"{gateway['rps']:,.0f} | {gateway['errors']} |"
            )
            summary.append((prefix or "bench-load", phase, mode, added99, gateway["errors"] + direct["errors"]))
    lines.append("")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("results", type=Path)
    parser.add_argument("report", type=Path)
    parser.add_argument("--command", default="gateway/bench/run.sh")
    parser.add_argument("--duration", default="10")
    parser.add_argument("--rates", default="1000 2000 5000")
    parser.add_argument("--sequential", default="5000")
    parser.add_argument("--redis", default="")
    parser.add_argument("--commit", default="")
    parser.add_argument("--usage", default="1")
    args = parser.parse_args()
    rates = args.rates.split()
    results = args.results

    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    rss_samples = [int(x) for x in (results / "gateway_rss_kib.txt").read_text().split() if x.isdigit()] \
        if (results / "gateway_rss_kib.txt").exists() else []
    hwm = (results / "gateway_hwm_kib.txt").read_text().strip() if (results / "gateway_hwm_kib.txt").exists() else ""
    usage = load(results / "usage.json") or {}

    lines = [
        "# Gateway benchmark",
        "",
        f"Generated by `{args.command}` on {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC "
        f"at commit `{args.commit}`: {os.cpu_count()} cores ({cpu}), {platform.system()} {platform.release()}.",
        "",
        "Setup: a fast OpenAI-compatible mock upstream (`tools/src/bin/mock_upstream.rs`, answers at once), "
        "the release `bud-gateway` in front of it with a routes file holding one `Engine` deployment and one "
        "API key with request and token limits (checked and charged on every request, set high enough never to refuse; "
        + ("shared through a real `redis-server`" if args.redis else "local lock-free limiter")
        + "), and "
        + ("usage export to a real `clickhouse-server` (Debian's 18.16) on. " if args.usage != "0"
           else "usage export **off** (`BENCH_USAGE=0`). ")
        +
        "Every phase runs the same load against the mock directly and through the gateway; "
        "**added = gateway percentile − direct percentile**. "
        f"Concurrency 1: {int(args.sequential):,} requests one after another. Constant rates: {args.duration} s each. "
        "Streaming rows report the time to the first byte of the SSE stream (TTFT). "
        "The load generator, the mock, the gateway and ClickHouse share the machine's cores, "
        "so tails include scheduling noise from all four (and from anything else running): "
        "a p99 difference is only meaningful when the machine's load average (below) stays under its core count; "
        "a negative or erratic added p99 means the tail was noise.",
        "",
        "## oha (constant rate `-q`, first-byte percentiles for streams)",
        "",
    ]
    summary = []
    table(results, "oha-", oha_stats, rates, lines, summary)
    lines += [
        "## bench-load (open loop: request *i* starts at *i*/rate regardless of earlier ones)",
        "",
    ]
    table(results, "", load_stats, rates, lines, summary)

    overhead_rows = []
    for phase, label in phases(rates):
        for tool, prefix in (("oha", "oha-"), ("bench-load", "")):
            for mode in ("plain", "stream"):
                path = results / f"overhead-{prefix}{phase}-{mode}-gateway.tsv"
                if not path.exists():
                    continue
                fields = path.read_text().split()
                if len(fields) != 3 or fields[0] == "0":
                    continue
                count, p50, p99 = int(fields[0]), float(fields[1]) * 1000, float(fields[2]) * 1000
                overhead_rows.append(f"| {label} | {'stream' if mode == 'stream' else 'non-streaming'} | {tool} | "
                                     f"{count:,} | {fmt_us(p50)} | {fmt_us(p99)} |")
    if overhead_rows:
        lines += [
            "## The gateway's own view (from its usage rows)",
            "",
            "`gateway_overhead_ms` of each usage row: the request's total time in the gateway minus the time it "
            "waited on the upstream (so it excludes the extra network hop, and is not disturbed by noise on the "
            "client side). Rows are selected by the tool's API key, streaming flag and the phase's time window.",
            "",
            "| load | body | tool | rows | overhead p50 | overhead p99 |",
            "|---|---|---|---|---|---|",
            *overhead_rows,
            "",
        ]

    max_rss_mib = max(rss_samples) / 1024 if rss_samples else None
    lines += ["## Resources and usage export", ""]
    if max_rss_mib is not None:
        lines.append(f"- Gateway resident memory: max sampled **{max_rss_mib:.1f} MiB**"
                     + (f", peak (VmHWM) {int(hwm) / 1024:.1f} MiB" if hwm.isdigit() else "") + ".")
    if usage:
        lines.append(
            f"- Usage rows: {usage.get('rows_exported', 0):,.0f} exported by the gateway, "
            f"{usage.get('clickhouse_rows', 0):,} in ClickHouse {usage.get('clickhouse_version', '')}, "
            f"{usage.get('rows_dropped', 0):,.0f} dropped."
        )
    by_phase = results / "rss_by_phase.txt"
    if by_phase.exists():
        pairs = [line.split() for line in by_phase.read_text().splitlines() if len(line.split()) == 2]
        gateway_pairs = [(name, int(kib)) for name, kib in pairs if name.endswith("-gateway") and kib.isdigit()]
        if gateway_pairs:
            lines.append("- Gateway RSS after each gateway phase: "
                         + ", ".join(f"{name} {kib / 1024:.0f} MiB" for name, kib in gateway_pairs) + ".")
    loads = [(results / f"loadavg_{when}.txt") for when in ("start", "end")]
    if all(path.exists() for path in loads):
        lines.append(f"- Machine load average (1/5/15 min) at the start: {loads[0].read_text().strip()}; "
                     f"at the end: {loads[1].read_text().strip()} (on {os.cpu_count()} cores; above that, "
                     "other work competed with the benchmark).")
    lines.append("")

    def verdict(ok, worst=None):
        if worst is not None and worst < 0:
            return "inconclusive (the direct run's tail was noisier than the gateway's)"
        return "met" if ok else "**not met**"

    lines += ["## Against the targets of issue 4", ""]
    for source in ("oha-", "bench-load"):
        seq = [s for s in summary if s[0] == source and s[1] == "seq"]
        at2000 = [s for s in summary if s[0] == source and s[1] == "rate2000"]
        name = "oha" if source == "oha-" else "bench-load"
        if seq:
            worst = max(s[3] for s in seq if s[3] is not None)
            lines.append(f"- {name}: added p99 at concurrency 1 ≤ 250 µs: worst {fmt_us(worst)} — {verdict(worst <= TARGET_SEQ_P99_US, worst)}")
        if at2000:
            worst = max(s[3] for s in at2000 if s[3] is not None)
            lines.append(f"- {name}: added p99 at 2,000 req/s ≤ 1 ms: worst {fmt_us(worst)} — {verdict(worst <= TARGET_2000_P99_US, worst)}")
    errors = sum(s[4] for s in summary)
    lines.append(f"- zero errors: {errors} errors in all phases — {verdict(errors == 0)}")
    if max_rss_mib is not None:
        lines.append(f"- resident memory < 100 MiB: {max_rss_mib:.1f} MiB — {verdict(max_rss_mib < TARGET_RSS_MIB)}")
    lines.append("")
    lines.append("Raw results (JSON per run) are left in the harness's work directory (`BENCH_WORKDIR`, default `/tmp/bud-bench/results`).")
    lines.append("")
    args.report.write_text("\n".join(lines))


if __name__ == "__main__":
    main()
