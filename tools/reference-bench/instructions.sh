#!/usr/bin/env bash
# The nodes' instructions per request: a 3-node cluster of one kv build on loopback, each node
# under valgrind's callgrind, counting only while a fixed number of requests runs. Instruction
# counts do not depend on how busy or slow the machine is, so this compares builds (or one build
# with and without something) on a machine too noisy for ab.sh's timings, to within a percent
# or so from run to run. It counts work, not time: lock waits, fsync latency and scheduling do
# not show, and the nodes run 20 to 80 times slower, so whatever happens once a second (a
# scrape, a console tick, a heartbeat) weighs that much more per request than it does at full
# speed.
#
#   tools/reference-bench/instructions.sh DIR N [kv-cli bench options...]
#
# DIR holds a release build of kv-node and kv-cli; N is the number of requests (more than the
# flush interval, 32,768 applied entries, to count flushes: 100,000 takes a few minutes). Prints
# one line: the requests answered, the three nodes' instructions per request in all, and each
# node's. METRICS=1 turns on every node's HTTP port (8201-8203) and runs scraper.py beside the
# load. PREFILL=1 writes every key once before counting (as ab.sh does), then runs the load
# once uncounted, so that the counted writes change keys that exist and no flush of the prefill
# is left to count; without it most of them create keys. KEEP=DIR copies the callgrind files there (callgrind.1-3, by node id) for
# callgrind_annotate. Uses ports 7201-7203 on 127.0.0.1; heartbeats every 200 ms and an election timeout of
# 5 s, so that valgrind's slowdown starts no elections.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
DIR=$1; N=$2; shift 2
command -v callgrind_control > /dev/null || { echo "needs valgrind (apt-get install valgrind)" >&2; exit 1; }
WORK=$(mktemp -d)
PIDS=()
SCRAPER=
stop_all() {
    if [ -n "$SCRAPER" ]; then kill "$SCRAPER" 2>/dev/null || true; SCRAPER=; fi
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do
        for _ in $(seq 1 300); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    done
    PIDS=()
}
trap 'stop_all; rm -rf "$WORK"' EXIT

for i in 1 2 3; do
    peers=()
    for j in 1 2 3; do [ "$i" != "$j" ] && peers+=(--peer "$j=127.0.0.1:720$j"); done
    http=()
    [ -n "${METRICS:-}" ] && http=(--http-listen "127.0.0.1:820$i")
    RUST_LOG=warn valgrind -q --tool=callgrind --callgrind-out-file="$WORK/callgrind.$i" --instr-atstart=no \
        "$DIR/kv-node" --id "$i" --listen "127.0.0.1:720$i" --data-dir "$WORK/n$i" "${peers[@]}" \
        --worker-threads 1 --heartbeat-ms 200 --election-timeout-ms 5000 ${http[@]+"${http[@]}"} \
        2> "$WORK/kv-$i.log" &
    PIDS+=($!)
done
ALL=127.0.0.1:7201,127.0.0.1:7202,127.0.0.1:7203
for _ in $(seq 1 600); do
    "$DIR/kv-cli" --addr "$ALL" -c "SET warm 1" > /dev/null 2>&1 && break
    sleep 0.2
done
if [ -n "${PREFILL:-}" ]; then
    "$DIR/kv-cli" --addr "$ALL" bench --prefill -n 1 --clients 1 > /dev/null
    "$DIR/kv-cli" --addr "$ALL" bench -n "$N" "$@" > /dev/null || true
fi
for pid in "${PIDS[@]}"; do callgrind_control -i on "$pid" > /dev/null; done
[ -n "${METRICS:-}" ] && { python3 "$HERE/scraper.py" 0 & SCRAPER=$!; }
# Requests whose outcome is unknown (valgrind's slowdown can outlast a request's timeout) make
# kv-cli exit non-zero; the report says how many were answered.
"$DIR/kv-cli" --addr "$ALL" bench -n "$N" "$@" --json > "$WORK/bench.json" || true
# A dump holds what was counted since instrumentation began; turned off, nothing more is.
for pid in "${PIDS[@]}"; do
    callgrind_control -d "$pid" > /dev/null
    callgrind_control -i off "$pid" > /dev/null
done
stop_all
if [ -n "${KEEP:-}" ]; then mkdir -p "$KEEP" && cp "$WORK"/callgrind.* "$WORK"/bench.json "$KEEP"/; fi
python3 - "$WORK" <<'PY'
import glob, json, sys
work = sys.argv[1]
report = json.load(open(f"{work}/bench.json"))
requests = report["requests"]
nodes = []
for node in (1, 2, 3):
    counted = 0
    for path in glob.glob(f"{work}/callgrind.{node}") + glob.glob(f"{work}/callgrind.{node}.*"):
        found = {}
        for line in open(path):
            if line.startswith(("totals:", "summary:")):
                found[line.split(":")[0]] = int(line.split()[1])
        counted += found.get("totals", found.get("summary", 0))
    nodes.append(counted / requests)
each = " ".join(f"{n:.0f}" for n in nodes)
print(f"answered {report['ok']}/{requests}\tinstructions/request {sum(nodes):.0f}\tnodes {each}")
PY
