#!/usr/bin/env bash
# Interleaved A/B of two kv builds with kv-cli bench: for each round, each build in turn (the
# order alternating from round to round) gets a fresh 3-node cluster on loopback, a prefill, and
# the same loads; prints one line per run, then each load's median per build and the median of
# the rounds' B/A ratios (each round's two runs are neighbours in time, so their ratio cancels
# most of the machine's drift). Use an even ROUNDS, so that each build runs first equally often.
#
#   tools/reference-bench/ab.sh DIR_A DIR_B [ROUNDS] [SECONDS]
#
# LOADS (default "writes reads pipelined") picks the loads: writes (50 clients), reads (50
# clients, linearizable), pipelined (50 clients, 16 writes in flight each); and, for builds that
# have `bench --workload`: scan (10 clients, 1,000-key pages; the median also in keys/s), incr
# (50 clients, INCR on one key), txn (50 clients, TXN with two compares and two writes).
# DIR_A and DIR_B hold release builds of kv-node and kv-cli (e.g. target/release of two
# checkouts). Each run uses its build's own kv-cli. Uses ports 7201-7203 on 127.0.0.1.
# SECURE (default none) names the side(s) that run with TLS and auth, the client logged in as
# root: A, B or "A B". With the same DIR twice and SECURE=B it measures what security costs.
# METRICS (default none) names the side(s) whose nodes serve HTTP (ports 8201-8203) while a
# scraper (one python3 process, keeping its connections) reads every node's /metrics once a
# second and watches node 1's console stream: with the same DIR twice and METRICS=B it measures
# what metrics and an open console cost.
# After the medians it prints, per build, the nodes' CPU per request over the loads (median of
# the runs; read from /proc, so it leaves out the client and the scraper, which share the
# machine) and the scraper's own CPU per run.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
A=$1; B=$2; ROUNDS=${3:-6}; SECONDS_EACH=${4:-5}
LOADS=${LOADS:-writes reads pipelined}
SECURE=${SECURE:-none}
METRICS=${METRICS:-none}
SCRAPER=
WORK=$(mktemp -d)
RESULTS=$WORK/results.tsv
WORKERS=$(( $(nproc) / 3 )); [ "$WORKERS" -ge 1 ] || WORKERS=1
PIDS=()
trap 'stop_all; rm -rf "$WORK"' EXIT
ALL=127.0.0.1:7201,127.0.0.1:7202,127.0.0.1:7203

# CPU seconds process $1 has used so far (user + system), or 0 if it is gone.
cpu_seconds() {
    awk -v hz="$(getconf CLK_TCK)" '{ printf "%.3f", ($14 + $15) / hz }' "/proc/$1/stat" 2>/dev/null || echo 0
}

# CPU seconds the nodes have used so far, together.
nodes_cpu() {
    local total=0
    for pid in "${PIDS[@]}"; do total=$(awk -v a="$total" -v b="$(cpu_seconds "$pid")" 'BEGIN { printf "%.3f", a + b }'); done
    echo "$total"
}

stop_all() {
    # What the loads cost in CPU: the nodes' per request answered, and the scraper's own.
    if [ ${#PIDS[@]} -gt 0 ] && [ -n "${CURRENT:-}" ]; then
        local nodes scraper=0
        nodes=$(awk -v a="$(nodes_cpu)" -v b="$NODES_CPU_BEFORE" 'BEGIN { printf "%.3f", a - b }')
        [ -n "$SCRAPER" ] && scraper=$(cpu_seconds "$SCRAPER")
        printf '%s\t%s\t%s\t%s\t%s\n' "$CURRENT" "$nodes" "$scraper" "$(cat "$WORK/requests")" "$ROUND" >> "$WORK/cpu.tsv"
        CURRENT=
    fi
    if [ -n "$SCRAPER" ]; then kill "$SCRAPER" 2>/dev/null || true; wait "$SCRAPER" 2>/dev/null || true; SCRAPER=; fi
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do while kill -0 "$pid" 2>/dev/null; do sleep 0.1; done; done
    PIDS=()
}

# The flags that secure build $1's nodes and clients, if SECURE names it (CLIENT and NODE_FLAGS).
secure() {
    CLIENT=(); NODE_FLAGS=()
    case " $SECURE " in *" $1 "*) ;; *) return 0 ;; esac
    local certs=$WORK/certs-$1
    if [ ! -d "$certs" ]; then
        "$2/kv-cli" cert --certs-dir "$certs" create-ca > /dev/null
        for i in 1 2 3; do "$2/kv-cli" cert --certs-dir "$certs" create-node "$i" > /dev/null; done
        echo bench-root-password > "$certs/root-password"
    fi
    CLIENT=(--ca "$certs/ca.crt" --user root --password-file "$certs/root-password")
    NODE_FLAGS=(--tls-ca "$certs/ca.crt" --auth --root-password-file "$certs/root-password")
}

start() {
    local build=$1 dir=$2
    secure "$build" "$dir"
    for i in 1 2 3; do
        local peers=() tls=()
        for j in 1 2 3; do [ "$i" != "$j" ] && peers+=(--peer "$j=127.0.0.1:720$j"); done
        [ ${#NODE_FLAGS[@]} -gt 0 ] && tls=("${NODE_FLAGS[@]}" --tls-cert "$WORK/certs-$build/node-$i.crt" \
            --tls-key "$WORK/certs-$build/node-$i.key")
        case " $METRICS " in *" $build "*) tls+=(--http-listen "127.0.0.1:820$i") ;; esac
        RUST_LOG=warn "$dir/kv-node" --id "$i" --listen "127.0.0.1:720$i" --data-dir "$WORK/kv/n$i" \
            "${peers[@]}" ${tls[@]+"${tls[@]}"} --worker-threads "$WORKERS" 2> "$WORK/kv-$i.log" &
        PIDS+=($!)
    done
    for _ in $(seq 1 100); do
        "$dir/kv-cli" --addr "$ALL" ${CLIENT[@]+"${CLIENT[@]}"} -c "SET warm 1" > /dev/null 2>&1 && break
        sleep 0.1
    done
    case " $METRICS " in
        *" $build "*)
            local tls=0; [ ${#NODE_FLAGS[@]} -gt 0 ] && tls=1
            # One process keeping its connections, as Prometheus does (a curl per scrape costs
            # the shared machine more than the nodes' metrics do). Bounded: at most an hour of
            # scrapes, and stopped with the cluster.
            python3 "$HERE/scraper.py" "$tls" &
            SCRAPER=$!
            ;;
    esac
}

bench() {
    local build=$1 dir=$2 label=$3; shift 3
    "$dir/kv-cli" --addr "$ALL" ${CLIENT[@]+"${CLIENT[@]}"} bench --duration "$SECONDS_EACH" --json "$@" | python3 -c '
import json, sys
r = json.load(sys.stdin)
print("\t".join([sys.argv[1], sys.argv[2], str(round(r["requests_per_second"])), str(r["latency_ms"]["p99"]), sys.argv[4]]))
if r["ok"] != r["requests"]: print("errors:", r["errors"], "unknown:", r["unknown"], file=sys.stderr)
with open(sys.argv[3], "r+") as f:
    total = int(f.read() or 0) + r["requests"]
    f.seek(0); f.truncate(); f.write(str(total))
' "$build" "$label" "$WORK/requests" "$ROUND" | tee -a "$RESULTS"
}

run() {
    local build=$1 dir=$2
    start "$build" "$dir"
    CURRENT=$build
    echo 0 > "$WORK/requests"
    "$dir/kv-cli" --addr "$ALL" ${CLIENT[@]+"${CLIENT[@]}"} bench --prefill -n 1 --clients 1 > /dev/null
    NODES_CPU_BEFORE=$(nodes_cpu)
    for load in $LOADS; do
        case $load in
            writes) bench "$build" "$dir" writes --clients 50 ;;
            reads) bench "$build" "$dir" reads --clients 50 --reads 100 ;;
            pipelined) bench "$build" "$dir" pipelined --clients 50 --pipeline 16 ;;
            scan) bench "$build" "$dir" scan --clients 10 --workload scan --scan-limit 1000 ;;
            incr) bench "$build" "$dir" incr --clients 50 --workload incr ;;
            txn) bench "$build" "$dir" txn --clients 50 --workload txn ;;
            *) echo "unknown load $load" >&2; exit 2 ;;
        esac
    done
    stop_all
    rm -rf "$WORK/kv"
    # The next run should not pay for writing back this one's files.
    sync
}

for ROUND in $(seq 1 "$ROUNDS"); do
    if [ $((ROUND % 2)) = 1 ]; then run A "$A"; run B "$B"; else run B "$B"; run A "$A"; fi
done

echo "medians (requests/s, p99 ms) over $ROUNDS rounds:"
python3 - "$RESULTS" <<'PY'
import statistics, sys
rows = [line.split("\t") for line in open(sys.argv[1]).read().split("\n") if line]
for load in dict.fromkeys(r[1] for r in rows):
    out = [load]
    for build in "AB":
        runs = [r for r in rows if r[0] == build and r[1] == load]
        out.append(f"{build} {statistics.median(int(r[2]) for r in runs):.0f}/s p99 {statistics.median(float(r[3]) for r in runs):.2f}")
    a = {r[4]: int(r[2]) for r in rows if r[0] == "A" and r[1] == load}
    ratios = sorted((int(r[2]) / a[r[4]] - 1) * 100 for r in rows if r[0] == "B" and r[1] == load)
    out.append(f"B/A {statistics.median(ratios):+.1f}% (rounds {' '.join(f'{x:+.1f}' for x in ratios)})")
    print("\t".join(out))
PY
echo "CPU per run (median): the three nodes' per request answered, and the scraper's:"
python3 - "$WORK/cpu.tsv" <<'PY'
import statistics, sys
rows = [line.split("\t") for line in open(sys.argv[1]).read().split("\n") if line]
for build in "AB":
    runs = [r for r in rows if r[0] == build]
    per_request = statistics.median(float(r[1]) / int(r[3]) * 1e6 for r in runs)
    print(f"{build}\tnodes {per_request:.2f} µs/request\tscraper {statistics.median(float(r[2]) for r in runs):.2f} s")
per_request = {(r[0], r[4]): float(r[1]) / int(r[3]) for r in rows}
ratios = sorted((b / per_request[("A", n)] - 1) * 100 for (side, n), b in per_request.items() if side == "B")
print(f"B/A nodes' CPU per request {statistics.median(ratios):+.1f}% (rounds {' '.join(f'{x:+.1f}' for x in ratios)})")
PY
