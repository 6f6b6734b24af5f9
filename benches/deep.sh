#!/usr/bin/env bash
# A deep queue on the release binary (issue 16): N persistent 16-byte
# messages published to a durable queue with nobody consuming, under a
# small memory budget; then a clean restart, a drain with an unrelated
# one-message ping-pong measured meanwhile, and a kill -9 in the middle of
# spilling. Prints one line per measurement.
#
#   benches/deep.sh [N] [MAX_MEMORY]     (defaults: 10000000, 33554432)
#
# Needs `cargo build --release` first. Uses port 5699 and target/deep-*
# (18 GB for a hundred million messages).
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-10000000}
MEM=${2:-33554432}
BIN=target/release/warren
PERF=target/release/warren-perf
PORT=5699
URI="amqp://guest:guest@127.0.0.1:$PORT/%2f"
DIR=$(mktemp -d "$PWD/target/deep-XXXX")
PID=

start() {
    local t0 t1 before
    before=$( (cat "$DIR/log" 2>/dev/null || true) | grep -c "started: AMQP" || true)
    t0=$(date +%s.%N)
    RUST_LOG=info "$BIN" --listen 127.0.0.1:$PORT --data-dir "$DIR/data" \
        --no-management --no-prometheus --max-memory "$MEM" >>"$DIR/log" 2>&1 &
    PID=$!
    # Serving once the loop runs (the listener is bound before recovery).
    until [ "$(grep -c "started: AMQP" "$DIR/log")" -gt "$before" ]; do
        sleep 0.002
    done
    t1=$(date +%s.%N)
    echo "$1: ready to serve in $(echo "$t1 - $t0" | bc) s; RSS $(rss) MiB"
}
rss() { awk '/VmRSS/ {printf "%.1f", $2 / 1024}' "/proc/$PID/status"; }
hwm() { awk '/VmHWM/ {printf "%.1f", $2 / 1024}' "/proc/$PID/status"; }
stop() { kill -TERM "$PID"; wait "$PID" || true; }
trap 'kill -9 $PID 2>/dev/null || true; rm -rf "$DIR"' EXIT

start "fresh start"
t0=$(date +%s.%N)
"$PERF" -u "$URI" -y 0 -C "$N" -c 2000 --persistent --durable-queues --keep -j \
    >"$DIR/fill.json" 2>/dev/null
t1=$(date +%s.%N)
echo "filled: $N messages in $(echo "$t1 - $t0" | bc) s; RSS $(rss) MiB, VmHWM $(hwm) MiB; data dir $(du -sm "$DIR/data" | cut -f1) MiB"
stop
grep -E "store closed cleanly" "$DIR/log" | tail -1 | sed 's/^.*\] /  /'
start "clean restart"
grep -E "store recovered|recovered .* durable queues" "$DIR/log" | tail -2 | sed 's/^.*\] /  /'

# Drain with acks (prefetch 500) while a separate queue runs a one-message
# ping-pong; both report their numbers.
"$PERF" -u "$URI" -l -z 15 -e ping-x --queue-prefix ping- -j >"$DIR/ping.json" 2>/dev/null &
PING=$!
"$PERF" -u "$URI" -x 0 -y 1 -q 500 -A 50 --durable-queues --keep --drain "$N" -j \
    >"$DIR/drain.json" 2>/dev/null || true
wait "$PING" || true
field() { grep -o "\"$2\":[^,]*" "$1" | head -1 | cut -d: -f2; }
echo "drained: $(field "$DIR/drain.json" consumed) of $N in $(field "$DIR/drain.json" consume_s) s = $(field "$DIR/drain.json" consume_rate) msg/s, out of order $(field "$DIR/drain.json" out_of_order)"
echo "ping-pong meanwhile (15 s, one message in flight): $(grep -o '"latency_us":{[^}]*}' "$DIR/ping.json")"
echo "RSS after the drain $(rss) MiB, VmHWM $(hwm) MiB"
stop

# kill -9 while spilling, then a restart (the log is scanned).
rm -rf "$DIR/data"
start "fresh start"
"$PERF" -u "$URI" -y 0 -C "$N" -c 2000 --persistent --durable-queues --keep -j \
    >/dev/null 2>&1 &
FILL=$!
sleep 5
kill -9 "$PID"
wait "$PID" 2>/dev/null || true
wait "$FILL" 2>/dev/null || true
start "restart after kill -9"
grep -E "checkpoint found|store recovered|recovered .* durable queues" "$DIR/log" | tail -3 | sed 's/^.*\] /  /'
stop
echo "checkpoints (the slowest three):"
grep -o "checkpoint: .*" "$DIR/log" | awk '{print $NF, $0}' | sort -h | tail -3 | cut -d' ' -f2- | sed 's/^/  /'
