#!/usr/bin/env bash
# Gateway benchmark: the latency the gateway adds over a direct call to the same fast mock,
# with API keys, rate limits and usage export to ClickHouse switched on. Writes
# gateway/bench/REPORT.md (and raw results under $BENCH_WORKDIR/results).
#
#   gateway/bench/run.sh                      # everything, ~4 minutes of load
#   BENCH_DURATION=5 BENCH_RATES="1000 2000" gateway/bench/run.sh
#   BENCH_REDIS=1 gateway/bench/run.sh        # limits shared through a real redis-server
#   BENCH_USAGE=0 gateway/bench/run.sh        # usage export off (to measure what it costs)
#
# Phases, each run direct (load -> mock) and through the gateway (load -> gateway -> mock):
#   - concurrency 1: BENCH_SEQUENTIAL requests one after the other;
#   - constant arrival rates BENCH_RATES (req/s) for BENCH_DURATION seconds each;
#   non-streaming and streaming, each measured by `oha` (crates.io; installed into
#   BENCH_TOOLS_DIR on first use; its first-byte percentiles give TTFT for streams) and by
#   bench-load (tools/: a true open-loop constant-arrival-rate client, as a cross-check).
# "Added" latency is the gateway's percentile minus the direct call's percentile.
# Everything binds 127.0.0.1; every wait has a deadline; all processes are stopped on exit.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
workdir="${BENCH_WORKDIR:-/tmp/bud-bench}"
duration="${BENCH_DURATION:-10}"
rates="${BENCH_RATES:-1000 2000 5000}"
sequential="${BENCH_SEQUENTIAL:-5000}"
oha_connections="${BENCH_OHA_CONNECTIONS:-64}"
tools_dir="${BENCH_TOOLS_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/bud-foundry/bench-tools}"
target="${CARGO_TARGET_DIR:-$repo/target}"
case "$target" in /*) ;; *) target="$repo/$target" ;; esac
report="${BENCH_REPORT:-$here/REPORT.md}"

log() { echo "bench: $*" >&2; }

rm -rf "$workdir"
mkdir -p "$workdir/results"
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
    BUD_TEST_SERVICES_DIR="$workdir/services" "$repo/gateway/tests/services.sh" stop 2>/dev/null || true
}
trap cleanup EXIT

# --- tools ------------------------------------------------------------------------------
oha="$(command -v oha || true)"
if [ -z "$oha" ]; then
    oha="$tools_dir/bin/oha"
    if [ ! -x "$oha" ]; then
        log "installing oha from crates.io into $tools_dir (once)"
        cargo install oha --locked --root "$tools_dir" >&2
    fi
fi
log "building bud-gateway (release) and the bench helpers"
(cd "$repo" && CARGO_TARGET_DIR="$target" cargo build --release -p bud-gateway >&2)
CARGO_TARGET_DIR="$target/bench-tools" cargo build --release --manifest-path "$here/tools/Cargo.toml" >&2
gateway_bin="$target/release/bud-gateway"
mock_bin="$target/bench-tools/release/bench-mock-upstream"
load_bin="$target/bench-tools/release/bench-load"

# Reads "listening on ADDR" from a process's stdout file, with a deadline.
wait_listening() {
    local file="$1" what="$2" deadline=$((SECONDS + 60))
    until grep -q '^listening on ' "$file" 2>/dev/null; do
        if ((SECONDS >= deadline)); then
            log "$what did not start"
            return 1
        fi
        sleep 0.1
    done
    grep -m1 '^listening on ' "$file" | awk '{print $3}'
}

# --- services -----------------------------------------------------------------------------
log "starting ClickHouse${BENCH_REDIS:+ and Redis} for usage export${BENCH_REDIS:+ and shared limits}"
eval "$(BUD_TEST_SERVICES_DIR="$workdir/services" "$repo/gateway/tests/services.sh" start)"

"$mock_bin" --listen 127.0.0.1:0 >"$workdir/mock.out" 2>"$workdir/mock.err" &
pids+=($!)
mock_addr="$(wait_listening "$workdir/mock.out" "the mock upstream")"

# One key per load tool, so the usage rows tell the tools' requests apart.
api_key="sk-bench-load-$(date +%s)"
key_hash="sha256:$(printf '%s' "$api_key" | sha256sum | awk '{print $1}')"
oha_api_key="sk-bench-oha-$(date +%s)"
oha_key_hash="sha256:$(printf '%s' "$oha_api_key" | sha256sum | awk '{print $1}')"
mock_port="${mock_addr##*:}"
cat >"$workdir/routes.yaml" <<EOF
deployments:
  - namespace: bench
    name: bench-engine
    route:
      servedName: bench
      provider: Engine
      upstreamModel: bench-upstream
      pricing:
        inputPerMillionTokens: "0.10"
        outputPerMillionTokens: "0.20"
    endpoints:
      - address: 127.0.0.1
        port: $mock_port
        ready: true
        pod: bench-engine-0
apiKeys:
  - namespace: bench
    name: bench
    keyHash: "$key_hash"
    keyId: bench-load
    models: [bench]
    # Limits are checked and charged on every request, set high enough never to refuse.
    limits:
      requestsPerMinute: 1000000000
      tokensPerMinute: 1000000000000
  - namespace: bench
    name: bench-oha
    keyHash: "$oha_key_hash"
    keyId: bench-oha
    models: [bench]
    limits:
      requestsPerMinute: 1000000000
      tokensPerMinute: 1000000000000
EOF

gateway_args=(--listen 127.0.0.1:0 --routes-file "$workdir/routes.yaml")
if [ "${BENCH_USAGE:-1}" != 0 ]; then
    gateway_args+=(--clickhouse-url "$BUD_TEST_CLICKHOUSE_URL" --clickhouse-database bud_bench --clickhouse-flush-ms 500)
fi
if [ -n "${BENCH_REDIS:-}" ]; then
    gateway_args+=(--redis-url "$BUD_TEST_REDIS_URL")
fi
RUST_LOG="${RUST_LOG:-warn}" "$gateway_bin" "${gateway_args[@]}" >"$workdir/gateway.out" 2>"$workdir/gateway.err" &
gateway_pid=$!
pids+=("$gateway_pid")
gateway_addr="$(wait_listening "$workdir/gateway.out" "the gateway")"
deadline=$((SECONDS + 30))
until curl -sf "http://$gateway_addr/readyz" >/dev/null; do
    ((SECONDS < deadline)) || { log "the gateway never became ready"; cat "$workdir/gateway.err" >&2; exit 1; }
    sleep 0.1
done
log "mock on $mock_addr, gateway on $gateway_addr (pid $gateway_pid)"

# Gateway RSS, sampled twice a second for the whole run.
(while kill -0 "$gateway_pid" 2>/dev/null; do
    awk '/^VmRSS/ {print $2}' "/proc/$gateway_pid/status" 2>/dev/null || true
    sleep 0.5
done) >"$workdir/results/gateway_rss_kib.txt" &
pids+=($!)

body='{"model":"bench","messages":[{"role":"user","content":"Say hello."}],"max_tokens":16}'
stream_body='{"model":"bench","messages":[{"role":"user","content":"Say hello."}],"max_tokens":16,"stream":true}'
direct_url="http://$mock_addr/v1/chat/completions"
gateway_url="http://$gateway_addr/v1/chat/completions"
auth="authorization: Bearer $api_key"
oha_auth="authorization: Bearer $oha_api_key"

# Smoke test: the gateway answers, with rate-limit headers.
curl -sS -D "$workdir/smoke.headers" -o "$workdir/smoke.body" -H "$auth" -H 'content-type: application/json' \
    -d "$body" "$gateway_url"
grep -qi '^HTTP/1.1 200' "$workdir/smoke.headers" || { log "smoke request failed:"; cat "$workdir/smoke.headers" "$workdir/smoke.body" >&2; exit 1; }

# Gateway RSS (KiB) after each phase, to tell steady state from a backlog spike.
note_rss() {
    echo "$1 $(awk '/^VmRSS/ {print $2}' "/proc/$gateway_pid/status")" >>"$workdir/results/rss_by_phase.txt"
}

# Time window and key of each gateway phase, to read the gateway's own overhead from its usage rows.
note_window() { # name key_id started_at
    case "$1" in *-gateway) ;; *) return 0 ;; esac
    local streamed=0
    case "$1" in *-stream-*) streamed=1 ;; esac
    echo "$1 $2 $streamed $3 $(date +%s)" >>"$workdir/results/gateway_windows.txt"
}

run_load() { # name url body [args...]
    local name="$1" url="$2" request_body="$3"
    shift 3
    log "bench-load $name"
    local started_at
    started_at="$(date +%s)"
    "$load_bin" --url "$url" --body "$request_body" --header "$auth" "$@" >"$workdir/results/$name.json"
    note_rss "$name"
    note_window "$name" bench-load "$started_at"
}

run_oha() { # name url body [args...]
    local name="$1" url="$2" request_body="$3"
    shift 3
    log "oha $name"
    local started_at
    started_at="$(date +%s)"
    "$oha" --no-tui --output-format json -m POST -T application/json -H "$oha_auth" -d "$request_body" "$@" "$url" \
        >"$workdir/results/oha-$name.json"
    note_rss "oha-$name"
    note_window "oha-$name" bench-oha "$started_at"
}

cut -d' ' -f1-3 /proc/loadavg >"$workdir/results/loadavg_start.txt"
# Warm both paths (connection pools, caches) before measuring.
"$load_bin" --url "$direct_url" --body "$body" --requests 500 >/dev/null
"$load_bin" --url "$gateway_url" --body "$body" --header "$auth" --requests 500 >/dev/null

for target_name in direct gateway; do
    url="$direct_url"
    [ "$target_name" = gateway ] && url="$gateway_url"
    run_load "seq-plain-$target_name" "$url" "$body" --requests "$sequential" --warmup 100
    run_load "seq-stream-$target_name" "$url" "$stream_body" --requests "$sequential" --warmup 100
    run_oha "seq-plain-$target_name" "$url" "$body" -c 1 -n "$sequential"
    run_oha "seq-stream-$target_name" "$url" "$stream_body" -c 1 -n "$sequential"
done
for rate in $rates; do
    for target_name in direct gateway; do
        url="$direct_url"
        [ "$target_name" = gateway ] && url="$gateway_url"
        run_load "rate$rate-plain-$target_name" "$url" "$body" --rate "$rate" --duration "$duration"
        run_load "rate$rate-stream-$target_name" "$url" "$stream_body" --rate "$rate" --duration "$duration"
        run_oha "rate$rate-plain-$target_name" "$url" "$body" -q "$rate" -z "${duration}s" -c "$oha_connections"
        run_oha "rate$rate-stream-$target_name" "$url" "$stream_body" -q "$rate" -z "${duration}s" -c "$oha_connections"
    done
done

# Usage export: every gateway request should become a row (give the last batch a deadline).
curl -sf "http://$gateway_addr/metrics" >"$workdir/results/gateway_metrics.txt"
gateway_requests="$(awk '/^[a-z_]*requests_total\{/ && /status="200"|code="200"|status_code="200"/ {sum += $NF} END {print sum + 0}' "$workdir/results/gateway_metrics.txt")"
deadline=$((SECONDS + 60))
rows=0
while ((SECONDS < deadline)); do
    rows="$(curl -sf "$BUD_TEST_CLICKHOUSE_URL" --data-binary 'SELECT count() FROM bud_bench.usage' || echo 0)"
    exported="$(curl -sf "http://$gateway_addr/metrics" | awk '/^[a-z_]*usage_rows_exported_total/ {print $NF}')"
    dropped="$(curl -sf "http://$gateway_addr/metrics" | awk '/^[a-z_]*usage_rows_dropped_total/ {sum += $NF} END {print sum + 0}')"
    # Done once the exporter's counters stop moving and ClickHouse holds what it reports.
    if [ -n "$exported" ] && [ "${rows:-0}" = "${exported%.*}" ] && [ "${previous:-}" = "$exported" ]; then break; fi
    previous="$exported"
    sleep 1
done
curl -sf "http://$gateway_addr/metrics" >"$workdir/results/gateway_metrics.txt"
ch_version="$(curl -sf "$BUD_TEST_CLICKHOUSE_URL" --data-binary 'SELECT version()' || echo unknown)"
echo "{\"clickhouse_version\": \"$ch_version\", \"clickhouse_rows\": ${rows:-0}, \"rows_exported\": ${exported:-0}, \"rows_dropped\": ${dropped:-0}, \"gateway_ok_requests\": ${gateway_requests:-0}}" \
    >"$workdir/results/usage.json"
cut -d' ' -f1-3 /proc/loadavg >"$workdir/results/loadavg_end.txt"
# The gateway's own view: total latency minus the time spent waiting on the upstream, per phase.
if [ "${BENCH_USAGE:-1}" != 0 ]; then
    while read -r name key streamed started ended; do
        curl -sf "$BUD_TEST_CLICKHOUSE_URL" --data-binary "SELECT count(), quantileExact(0.5)(gateway_overhead_ms), \
            quantileExact(0.99)(gateway_overhead_ms) FROM bud_bench.usage WHERE key_id = '$key' AND streamed = $streamed \
            AND time >= toDateTime($started) AND time <= toDateTime($ended) FORMAT TabSeparated" \
            >"$workdir/results/overhead-$name.tsv" || true
    done <"$workdir/results/gateway_windows.txt"
fi
awk '/^VmHWM/ {print $2}' "/proc/$gateway_pid/status" >"$workdir/results/gateway_hwm_kib.txt"

python3 "$here/report.py" "$workdir/results" "$report" \
    --command "${BENCH_COMMAND:-gateway/bench/run.sh}" --duration "$duration" --rates "$rates" \
    --sequential "$sequential" --redis "${BENCH_REDIS:-}" --usage "${BENCH_USAGE:-1}" --commit "$(git -C "$repo" rev-parse --short HEAD)"
log "report written to $report"
