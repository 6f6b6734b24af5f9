#!/usr/bin/env bash
# Standard warren-perf scenarios against one broker, one markdown table row
# per scenario.
#
#   benches/run.sh URI [LABEL]
#   DURATION=5 benches/run.sh amqp://guest:guest@127.0.0.1:5672/%2f rabbitmq
#
# Environment:
#   DURATION     seconds of publishing per scenario (default 5)
#   SCENARIOS    which scenarios to run, e.g. "1 2 7" (default: 1 2 3 4 5 6 7)
#   FLOOR=1      also run `warren-perf floor` (in-process TCP relay, no broker)
#                for 16 B and 64 KiB bodies and print its rows
#   BROKER_PID   the broker's process id: adds its CPU time per delivered
#                message (from /proc; steadier than throughput on a busy box)
#   NO_HEADER=1  don't print the table header (to append rows of another broker)
#   REPEAT=N     run each scenario N times and report the median run (by
#                delivered msg/s; latency: by p99), to damp run-to-run noise
#   WARREN_PERF  path of a warren-perf binary (default: build it with cargo)
#
# Scenarios (each uses its own exchange perf-sN and queues perf-sN-q-<i>):
#   1  1 publisher → 1 queue → 1 consumer, 16 B, no-ack
#   2  same, manual ack, prefetch 1000, one multiple-ack per 100 messages
#   3  1 publisher → fanout exchange → 4 queues → 4 consumers, 16 B (deliveries/s)
#   4  4 publishers → 4 queues → 4 consumers, 1 KiB
#   5  1 → 1 with 64 KiB bodies (MB/s)
#   6  8 publishers, persistent, confirms (≤1000 unconfirmed each) → durable
#      queue → 1 consumer (manual ack, prefetch 1000, multi-ack 100)
#   7  latency: one 16 B message in flight at a time (p50/p99)
#
# Columns: messages published/s, confirmed/s (scenario 6), delivered/s (all
# consumers together), delivered body MB/s (10^6 bytes), end-to-end latency
# p50/p99 in µs, broker CPU µs per delivered message (with BROKER_PID; for
# the floor rows, the relay thread's). Throughput scenarios publish flat out, so their latency is
# mostly time spent queued; scenario 7 is the latency measurement.
set -u

URI=${1:?usage: benches/run.sh amqp://user:pass@host:port/vhost [label]}
LABEL=${2:-$URI}
DURATION=${DURATION:-5}
SCENARIOS=${SCENARIOS:-1 2 3 4 5 6 7}
ROOT=$(cd "$(dirname "$0")/.." && pwd)

PERF=${WARREN_PERF:-}
if [ -z "$PERF" ]; then
    PERF=${CARGO_TARGET_DIR:-$ROOT/target}/release/warren-perf
    if ! (cd "$ROOT" && cargo build --release --bin warren-perf >&2); then
        if [ -x "$PERF" ]; then
            echo "run.sh: build failed, using the existing $PERF" >&2
        else
            exit 1
        fi
    fi
fi

status=0

# row LABEL NUMBER DESCRIPTION JSON [lat]
row() {
    python3 - "$1" "$2" "$3" "$4" "${5:-}" <<'PY'
import json, sys
label, num, desc, line, kind = sys.argv[1:6]
def n(x):
    return f"{x:,.0f}"
def cpu(x):
    return "–" if x is None else f"{x:,.2f}"
try:
    j = json.loads(line)
except ValueError:
    print(f"| {label} | {num} | {desc} | FAILED | | | | | | |")
    sys.exit(0)
if j.get("mode") == "floor":
    t, l = j["throughput"], j["latency"]
    if kind == "lat":
        print(f"| {label} | {num} | {desc} | {n(l['rate'])} | – | {n(l['rate'])} | "
              f"{l['rate'] * j['size'] / 1e6:,.2f} | {l['latency_us']['p50']:,.0f} | {l['latency_us']['p99']:,.0f} | "
              f"{cpu(l.get('relay_cpu_us_per_msg'))} |")
    else:
        print(f"| {label} | {num} | {desc} | {n(t['publish_rate'])} | – | {n(t['consume_rate'])} | "
              f"{t['consume_mb_s']:,.2f} | {t['latency_us']['p50']:,.0f} | {t['latency_us']['p99']:,.0f} | "
              f"{cpu(t.get('relay_cpu_us_per_msg'))} |")
    sys.exit(0)
lat = j["latency_us"]
conf = n(j["confirm_rate"]) if j["confirm"] else "–"
flag = " (FAILED)" if j.get("failed") else ""
lost = j["expected"] - j["consumed"]
note = f" ({lost:,} not delivered in time)" if lost > 0 and j["consumers"] else ""
print(f"| {label} | {num} | {desc}{flag}{note} | {n(j['publish_rate'])} | {conf} | {n(j['consume_rate'])} | "
      f"{j['consume_mb_s']:,.2f} | {lat['p50']:,.0f} | {lat['p99']:,.0f} | {cpu(j.get('broker_cpu_us_per_msg'))} |")
PY
}

# median JSON-LINES...: the run with the median delivered rate (latency
# runs: the median p99), so one noisy run does not make the row.
median() {
    python3 - "$@" <<'PY'
import json, sys
runs = []
for line in sys.argv[1:]:
    try:
        runs.append((json.loads(line), line))
    except ValueError:
        pass
if not runs:
    print(sys.argv[-1] if len(sys.argv) > 1 else "")
    sys.exit(0)
def key(r):
    j = r[0]
    return -j["latency_us"]["p99"] if j.get("latency_mode") else j["consume_rate"]
runs.sort(key=key)
print(runs[len(runs) // 2][1])
PY
}

# scenario NUMBER DESCRIPTION ARGS...
scenario() {
    local num=$1 desc=$2
    shift 2
    case " $SCENARIOS " in *" $num "*) ;; *) return ;; esac
    local out log=${TMPDIR:-/tmp}/warren-perf-s$num.log
    local pid=() runs=() r
    if [ -n "${BROKER_PID:-}" ]; then pid=(--broker-pid "$BROKER_PID"); fi
    for ((r = 0; r < ${REPEAT:-1}; r++)); do
        if ! out=$(set -o pipefail; "$PERF" --uri "$URI" --duration "$DURATION" --json "${pid[@]}" \
            --exchange "perf-s$num" --queue-prefix "perf-s$num-q-" "$@" 2>"$log" | tail -n 1) \
            || [ -z "$out" ]; then
            status=1
            echo "run.sh: scenario $num failed, see $log:" >&2
            tail -n 3 "$log" >&2
        fi
        runs+=("$out")
    done
    row "$LABEL" "$num" "$desc" "$(median "${runs[@]}")"
}

if [ -z "${NO_HEADER:-}" ]; then
    echo "| broker | # | scenario | published msg/s | confirmed msg/s | delivered msg/s | delivered MB/s | p50 µs | p99 µs | broker CPU µs/msg |"
    echo "|---|---|---|--:|--:|--:|--:|--:|--:|--:|"
fi

scenario 1 "1 pub → 1 queue → 1 consumer, 16 B, no-ack" \
    --publishers 1 --consumers 1 --queues 1 --size 16
scenario 2 "1 → 1, 16 B, manual ack, prefetch 1000, multi-ack 100" \
    --publishers 1 --consumers 1 --queues 1 --size 16 --ack --prefetch 1000 --multi-ack 100
scenario 3 "1 pub → fanout → 4 queues → 4 consumers, 16 B" \
    --publishers 1 --consumers 4 --queues 4 --exchange-type fanout --size 16
scenario 4 "4 pubs → 4 queues → 4 consumers, 1 KiB" \
    --publishers 4 --consumers 4 --queues 4 --size 1024
scenario 5 "1 → 1, 64 KiB, no-ack" \
    --publishers 1 --consumers 1 --queues 1 --size 65536
scenario 6 "8 pubs, persistent, confirms ≤1000 → durable queue → 1 consumer (ack, prefetch 1000, multi-ack 100)" \
    --publishers 8 --consumers 1 --queues 1 --size 16 --persistent --confirm 1000 \
    --durable-queues --ack --prefetch 1000 --multi-ack 100
scenario 7 "latency: 1 message in flight, 16 B" \
    --latency --size 16

if [ -n "${FLOOR:-}" ] && [ "$FLOOR" != 0 ]; then
    for size in 16 65536; do
        out=$("$PERF" floor --size "$size" --duration "$DURATION" --json 2>/dev/null | tail -n 1)
        row "floor (TCP relay, no broker)" "F" "$size B, flat out" "$out"
        if [ "$size" = 16 ]; then
            row "floor (TCP relay, no broker)" "F" "$size B, 1 message in flight" "$out" lat
        fi
    done
fi
exit $status
