#!/usr/bin/env bash
# Runs the side-by-side benchmark of docs/BENCHMARKS.md: kv (3 nodes), etcd (3 members) and Redis
# (a primary with two replicas, and a lone instance), one system at a time, on loopback, each
# started fresh for every round. Prints one line per measurement, then the medians.
#
#   tools/reference-bench/compare.sh [ROUNDS] [SECONDS]
#
# Needs: release builds of kv (cargo build --release) and of this tool (cargo build --release in
# tools/reference-bench, which needs protoc), and Debian's etcd-server, etcd-client, redis-server
# and redis-tools. Uses ports 7101-7103, 2379-2580 and 6379-6390 on 127.0.0.1.
set -euo pipefail
ROUNDS=${1:-3}
SECONDS_EACH=${2:-10}
REPO=$(cd "$(dirname "$0")/../.." && pwd)
KV_NODE=$REPO/target/release/kv-node
KV_CLI=$REPO/target/release/kv-cli
REF=$REPO/tools/reference-bench/target/release/reference-bench
WORK=$(mktemp -d)
RESULTS=$WORK/results.tsv
# The three members of each cluster share this machine's CPUs: each system runs with its share
# of them (kv's worker threads, etcd's GOMAXPROCS; Redis runs one thread anyway).
WORKERS=$(( $(nproc) / 3 )); [ "$WORKERS" -ge 1 ] || WORKERS=1
PIDS=()
trap 'stop_all; rm -rf "$WORK"' EXIT

stop_all() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do while kill -0 "$pid" 2>/dev/null; do sleep 0.1; done; done
    PIDS=()
}

record() { printf '%s\t%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" "${5:-}" >> "$RESULTS"; }

# kv-cli bench --json -> label, requests/s, p50 ms, p99 ms, client cpu cores
kv_bench() {
    local label=$1; shift
    "$KV_CLI" "$@" --json | python3 -c '
import json, sys
r = json.load(sys.stdin); l = r["latency_ms"]
print("\t".join(str(x) for x in [sys.argv[1], round(r["requests_per_second"]), l["p50"], l["p99"], round(r["client_cpu_cores"], 2)]))
if r["ok"] != r["requests"]: print("errors:", r["errors"], "unknown:", r["unknown"], file=sys.stderr)
' "$label" >> "$RESULTS"
    tail -1 "$RESULTS"
}

# reference-bench's line -> label, requests/s, p50, p99
ref_bench() {
    local label=$1; shift
    "$REF" "$@" --duration "$SECONDS_EACH" | python3 -c '
import re, sys
line = sys.stdin.read()
rps = re.search(r"([0-9.]+) requests/s", line).group(1)
p50 = re.search(r"p50 ([0-9.]+)", line).group(1); p99 = re.search(r"p99 ([0-9.]+)", line).group(1)
print("\t".join([sys.argv[1], rps, p50, p99, ""]))
' "$label" >> "$RESULTS"
    tail -1 "$RESULTS"
}

# Starts 3 kv nodes with the extra node flags given; sets ALL (every address) and LEADER.
kv_start() {
    local addrs=()
    for i in 1 2 3; do
        local peers=()
        for j in 1 2 3; do [ "$i" != "$j" ] && peers+=(--peer "$j=127.0.0.1:710$j"); done
        RUST_LOG=warn "$KV_NODE" --id "$i" --listen "127.0.0.1:710$i" --data-dir "$WORK/kv/n$i" "${peers[@]}" \
            --worker-threads "$WORKERS" "$@" 2> "$WORK/kv-$i.log" &
        PIDS+=($!)
        addrs+=("127.0.0.1:710$i")
    done
    ALL=$(IFS=,; echo "${addrs[*]}")
    for _ in $(seq 1 100); do "$KV_CLI" --addr "$ALL" -c "SET warm 1" > /dev/null 2>&1 && break; sleep 0.1; done
    LEADER=$("$KV_CLI" --addr "$ALL" -c CLUSTER --json | python3 -c '
import json, sys
print([row[1] for row in json.load(sys.stdin)["rows"] if row[2] == "leader"][0])')
}

kv_stop() {
    stop_all
    rm -rf "$WORK/kv"
}

kv_round() {
    kv_start
    kv_bench kv-write-50 --addr "$ALL" bench --duration "$SECONDS_EACH"
    kv_bench kv-write-50-leader --addr "$LEADER" bench --duration "$SECONDS_EACH"
    kv_bench kv-read-50 --addr "$ALL" bench --duration "$SECONDS_EACH" --reads 100
    kv_bench kv-read-50-leader --addr "$LEADER" bench --duration "$SECONDS_EACH" --reads 100
    kv_bench kv-write-1 --addr "$LEADER" bench --duration "$SECONDS_EACH" --clients 1
    kv_bench kv-write-50-pipeline-16 --addr "$ALL" bench --duration "$SECONDS_EACH" --pipeline 16
    kv_stop
    # The same reads with the leader's lease instead of a quorum round per check (not the default).
    kv_start --lease-reads
    "$KV_CLI" --addr "$LEADER" bench --prefill -n 1 --clients 1 > /dev/null
    kv_bench kv-lease-read-50 --addr "$ALL" bench --duration "$SECONDS_EACH" --reads 100
    kv_bench kv-lease-read-50-leader --addr "$LEADER" bench --duration "$SECONDS_EACH" --reads 100
    kv_stop
}

etcd_round() {
    local cluster="e1=http://127.0.0.1:2380,e2=http://127.0.0.1:2480,e3=http://127.0.0.1:2580" all=""
    for i in 1 2 3; do
        local c=$((2279 + i * 100)) p=$((2280 + i * 100))
        GOMAXPROCS=$WORKERS etcd --name "e$i" --data-dir "$WORK/etcd/e$i" --listen-client-urls "http://127.0.0.1:$c" \
            --advertise-client-urls "http://127.0.0.1:$c" --listen-peer-urls "http://127.0.0.1:$p" \
            --initial-advertise-peer-urls "http://127.0.0.1:$p" --initial-cluster "$cluster" \
            --initial-cluster-state new --initial-cluster-token bench --log-level error 2> "$WORK/etcd-$i.log" &
        PIDS+=($!)
        all="$all${all:+,}127.0.0.1:$c"
    done
    for _ in $(seq 1 100); do ETCDCTL_API=3 etcdctl --endpoints "$all" put warm 1 > /dev/null 2>&1 && break; sleep 0.2; done
    ref_bench etcd-put-50 etcd-put --addr "$all"
    ref_bench etcd-get-50 etcd-get --addr "$all"
    stop_all
    rm -rf "$WORK/etcd"
}

redis_round() {
    mkdir -p "$WORK/redis"
    for port in 6379 6380 6381 6390; do
        local replica=()
        [ "$port" = 6380 ] || [ "$port" = 6381 ] && replica=(--replicaof 127.0.0.1 6379)
        redis-server --port "$port" --bind 127.0.0.1 --save "" --appendonly no --dir "$WORK/redis" "${replica[@]}" \
            > "$WORK/redis-$port.log" 2>&1 &
        PIDS+=($!)
    done
    for _ in $(seq 1 100); do
        [ "$(redis-cli -p 6379 info replication 2>/dev/null | grep -c 'state=online')" = 2 ] && break
        sleep 0.2
    done
    ref_bench redis-set-wait-50 redis-set-wait --addr 127.0.0.1:6379
    for pipeline in 1 16; do
        local n=$((pipeline == 1 ? 600000 : 4000000))
        redis-benchmark -p 6390 -t get -c 50 -P "$pipeline" -n "$n" -r 100000 -d 16 --csv | python3 -c '
import csv, sys
row = list(csv.reader(sys.stdin))[1]
# "test","rps","avg_latency_ms","min_latency_ms","p50_latency_ms","p95_latency_ms","p99_latency_ms","max_latency_ms"
print("\t".join([sys.argv[1], row[1], row[4], row[6], ""]))
' "redis-get-50-pipeline-$pipeline" >> "$RESULTS"
        tail -1 "$RESULTS"
    done
    stop_all
    rm -rf "$WORK/redis"
}

for round in $(seq 1 "$ROUNDS"); do
    echo "== round $round of $ROUNDS"
    kv_round
    etcd_round
    redis_round
done

echo "== medians of $ROUNDS rounds (requests/s, p50 ms, p99 ms, kv-cli cpu cores)"
python3 - "$RESULTS" <<'PY'
import collections, statistics, sys
rows = collections.defaultdict(list)
for line in open(sys.argv[1]):
    label, *values = line.rstrip("\n").split("\t")
    rows[label].append(values)
for label, runs in rows.items():
    cols = list(zip(*runs))
    med = [statistics.median(float(v) for v in col) if all(col) else "" for col in cols]
    print(f"{label:26} {med[0]:>10.0f}/s  p50 {med[1]:7.3f}  p99 {med[2]:7.3f}  {'cpu ' + format(med[3], '.2f') if med[3] != '' else ''}")
PY
