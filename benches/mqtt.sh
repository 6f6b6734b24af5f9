#!/usr/bin/env bash
# MQTT side by side: the same `warren-perf mqtt` scenarios against warren,
# Debian's mosquitto 2.x and RabbitMQ (Debian's 3.10, rabbitmq_mqtt), each
# broker started fresh for each scenario on private ports under
# target/bench-mqtt/, and stopped again (also on Ctrl-C or failure).
# Prints a markdown table (rows also on stderr as they come).
#
#   benches/mqtt.sh
#   BROKERS=mosquitto SCENARIOS=qos1 DURATION=5 benches/mqtt.sh
#
# Environment:
#   BROKERS      which brokers, in order (default: warren mosquitto rabbitmq)
#   SCENARIOS    which scenarios, in order (default: fanin qos1 idle)
#   DURATION     seconds of publishing in fanin and qos1 (default 10)
#   PUBLISHERS   fanin publishers (default 100)
#   SIZE         payload bytes (default 16)
#   INFLIGHT     qos1: PUBLISHes awaiting PUBACK (default 100); also the
#                brokers' own window towards the subscriber (mosquitto's
#                max_inflight_messages, RabbitMQ's mqtt.prefetch)
#   CONNECTIONS  idle connections (default 10000)
#   IDLE_HOLD    seconds the idle connections are held (default 10)
#   SETTLE       seconds after they are all open until the broker's RSS is
#                read (default 5; less than IDLE_HOLD)
#   REPEAT=N     run each scenario N times (a fresh broker each time) and
#                report the median run (by subscriber msg/s; idle: by RSS
#                per connection)
#   WARREN_ARGS  more arguments for warren
#   WARREN       the warren binary (default target/release/warren)
#   SKIP_BUILD=1 use the release binaries as they are
#
# Scenarios (warren-perf mqtt --scenario ...):
#   fanin  PUBLISHERS connections publish QoS 0 to bench/<i>, one subscriber
#          on bench/#: its receive rate is the headline (QoS 0 may drop);
#          "published" counts what the broker had handled (each 64 KiB
#          batch ends with a PINGREQ; a publisher waits for the answers)
#   qos1   one publisher with INFLIGHT QoS 1 PUBLISHes awaiting PUBACK, one
#          QoS 1 subscriber acking each delivery: delivered msg/s, latency
#   idle   CONNECTIONS sessions (keep-alive 600 s) held IDLE_HOLD seconds;
#          the broker's VmRSS before they open and SETTLE seconds after
#          they are all open gives bytes per connection
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
BROKERS=${BROKERS:-warren mosquitto rabbitmq}
SCENARIOS=${SCENARIOS:-fanin qos1 idle}
DURATION=${DURATION:-10}
PUBLISHERS=${PUBLISHERS:-100}
SIZE=${SIZE:-16}
INFLIGHT=${INFLIGHT:-100}
CONNECTIONS=${CONNECTIONS:-10000}
IDLE_HOLD=${IDLE_HOLD:-10}
SETTLE=${SETTLE:-5}
WARREN_ARGS=${WARREN_ARGS:-}
WORK=$ROOT/target/bench-mqtt
PERF=$ROOT/target/release/warren-perf
WARREN=${WARREN:-$ROOT/target/release/warren}
RABBIT_BIN=/usr/lib/rabbitmq/bin

if [ "$SETTLE" -ge "$IDLE_HOLD" ]; then
    echo "mqtt.sh: SETTLE ($SETTLE) must be less than IDLE_HOLD ($IDLE_HOLD)" >&2
    exit 2
fi

say() { echo "mqtt.sh: $*" >&2; }

if [ -z "${SKIP_BUILD:-}" ]; then
    cargo build --release --bin warren --bin warren-perf >&2
fi

# Each side needs a descriptor per connection (and the brokers inherit it).
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
if [ "$(ulimit -n)" != unlimited ] && [ "$(ulimit -n)" -lt $((CONNECTIONS + 1000)) ]; then
    say "warning: open files limited to $(ulimit -n), CONNECTIONS=$CONNECTIONS may not fit"
fi

mkdir -p "$WORK"
RUN_ID=$$

# What is running now, for the EXIT trap.
BROKER=""        # name of the broker running, if any
BROKER_CHILD=""  # the process this script started for it
BROKER_PID=""    # the process whose memory and CPU are measured
PERF_PID=""
RABBIT_NODE=""
EPMD_PORT=""
EPMD_CHILD=""

port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# A port below the ephemeral range that nothing listens on.
free_port() {
    local p
    while :; do
        p=$((20000 + RANDOM % 12000))
        port_in_use "$p" || { echo "$p"; return; }
    done
}

wait_port() { # PORT SECONDS
    local i
    for ((i = 0; i < $2 * 20; i++)); do
        port_in_use "$1" && return 0
        if [ -n "$BROKER_CHILD" ] && ! kill -0 "$BROKER_CHILD" 2>/dev/null; then
            return 1
        fi
        sleep 0.05
    done
    return 1
}

rss_kb() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }

rabbitmqctl() {
    ERL_EPMD_PORT=$EPMD_PORT timeout 120 "$RABBIT_BIN/rabbitmqctl" -n "$RABBIT_NODE" "$@"
}

# our_node PID: the process is the RabbitMQ node this script started.
our_node() {
    [ -n "$1" ] && grep -qz "^RABBITMQ_NODENAME=$RABBIT_NODE\$" "/proc/$1/environ" 2>/dev/null
}

start_warren() {
    local amqp
    amqp=$(free_port)
    rm -rf "$ROOT/target/bench-mqtt-data"
    # shellcheck disable=SC2086 # WARREN_ARGS: several words
    "$WARREN" --mqtt-listen "127.0.0.1:$MQTT_PORT" --listen "127.0.0.1:$amqp" \
        --data-dir "$ROOT/target/bench-mqtt-data" --no-management --no-prometheus \
        $WARREN_ARGS </dev/null >"$WORK/warren.log" 2>&1 &
    BROKER_CHILD=$!
    BROKER_PID=$BROKER_CHILD
    wait_port "$MQTT_PORT" 30
}

start_mosquitto() {
    cat >"$WORK/mosquitto.conf" <<EOF
listener $MQTT_PORT 127.0.0.1
allow_anonymous true
persistence false
# QoS 1 messages a subscriber may have queued (and QoS 0 ones waiting to be
# written to it) before mosquitto drops: large, so that qos1 loses nothing.
max_queued_messages 1000000
# The window towards the subscriber, as the publisher's.
max_inflight_messages $INFLIGHT
log_dest stderr
log_type error
log_type warning
connection_messages false
EOF
    mosquitto -c "$WORK/mosquitto.conf" </dev/null >"$WORK/mosquitto.log" 2>&1 &
    BROKER_CHILD=$!
    BROKER_PID=$BROKER_CHILD
    wait_port "$MQTT_PORT" 30
}

start_rabbitmq() {
    local base=$WORK/rabbitmq amqp dist
    amqp=$(free_port)
    dist=$(free_port)
    RABBIT_NODE=warren-bench-mqtt-$RUN_ID@localhost
    rm -rf "$base"
    mkdir -p "$base/log"
    # A private epmd, this script's child (the node would otherwise start
    # a shared daemon that outlives it).
    EPMD_PORT=$(free_port)
    epmd -port "$EPMD_PORT" </dev/null >"$base/epmd.log" 2>&1 &
    EPMD_CHILD=$!
    wait_port "$EPMD_PORT" 10 || return 1
    echo "[rabbitmq_mqtt]." >"$base/enabled_plugins"
    cat >"$base/rabbitmq.conf" <<EOF
mqtt.listeners.tcp.1 = 127.0.0.1:$MQTT_PORT
mqtt.allow_anonymous = true
# The window towards a subscriber, as the publisher's.
mqtt.prefetch = $INFLIGHT
# A QoS 0 backlog may not take the shared machine's memory.
vm_memory_high_watermark.absolute = 4GB
EOF
    # The scripts themselves, not Debian's wrappers in /usr/sbin (those
    # switch to the rabbitmq user, which cannot use target/).
    ERL_EPMD_PORT=$EPMD_PORT \
        RABBITMQ_NODENAME=$RABBIT_NODE \
        RABBITMQ_NODE_IP_ADDRESS=127.0.0.1 \
        RABBITMQ_NODE_PORT=$amqp \
        RABBITMQ_DIST_PORT=$dist \
        RABBITMQ_MNESIA_BASE=$base/mnesia \
        RABBITMQ_LOG_BASE=$base/log \
        RABBITMQ_ENABLED_PLUGINS_FILE=$base/enabled_plugins \
        RABBITMQ_CONFIG_FILE=$base/rabbitmq \
        "$RABBIT_BIN/rabbitmq-server" </dev/null >"$base/stdout.log" 2>&1 &
    BROKER_CHILD=$!
    wait_port "$MQTT_PORT" 120 || return 1
    rabbitmqctl await_startup >/dev/null
    BROKER_PID=$(rabbitmqctl eval 'list_to_integer(os:getpid()).' | tr -dc 0-9)
    [ -n "$BROKER_PID" ]
}

ensure_installed() { # BROKER
    case $1 in
    mosquitto) command -v mosquitto >/dev/null && return ;;
    rabbitmq) [ -x "$RABBIT_BIN/rabbitmq-server" ] && return ;;
    *) return ;;
    esac
    say "installing $1 (apt-get)"
    local pkg=$1
    [ "$pkg" = rabbitmq ] && pkg=rabbitmq-server
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$pkg" >&2 ||
        { apt-get update -q >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$pkg" >&2; }
}

start_broker() { # BROKER
    MQTT_PORT=$(free_port)
    BROKER=$1
    if ! "start_$1"; then
        say "$1 did not start; its log:"
        tail -n 20 "$WORK/$1.log" "$WORK/rabbitmq/stdout.log" 2>/dev/null >&2 || true
        stop_broker
        return 1
    fi
}

stop_broker() {
    local i vm=""
    if [ "$BROKER" = rabbitmq ]; then
        # The Erlang VM (the child, or a child of the child), while it is
        # still the node this script started.
        our_node "$BROKER_PID" && vm=$BROKER_PID
        # An overloaded node may take long to stop: 20 s, then a signal.
        ERL_EPMD_PORT=$EPMD_PORT timeout 20 "$RABBIT_BIN/rabbitmqctl" -n "$RABBIT_NODE" \
            stop >/dev/null 2>&1 || true
        if [ -n "$vm" ] && our_node "$vm"; then kill -TERM "$vm" 2>/dev/null || true; fi
    fi
    if [ -n "$BROKER_CHILD" ]; then kill -TERM "$BROKER_CHILD" 2>/dev/null || true; fi
    for ((i = 0; i < 100; i++)); do
        if ! kill -0 "${BROKER_CHILD:-0}" 2>/dev/null && ! our_node "$vm"; then break; fi
        sleep 0.1
    done
    if [ -n "$vm" ] && our_node "$vm"; then kill -KILL "$vm" 2>/dev/null || true; fi
    if [ -n "$BROKER_CHILD" ]; then
        kill -KILL "$BROKER_CHILD" 2>/dev/null || true
        wait "$BROKER_CHILD" 2>/dev/null || true
    fi
    if [ -n "$EPMD_CHILD" ]; then
        kill -TERM "$EPMD_CHILD" 2>/dev/null || true
        wait "$EPMD_CHILD" 2>/dev/null || true
    fi
    BROKER="" BROKER_CHILD="" BROKER_PID="" RABBIT_NODE="" EPMD_PORT="" EPMD_CHILD=""
}

cleanup() {
    if [ -n "$PERF_PID" ]; then
        kill -TERM "$PERF_PID" 2>/dev/null || true
        wait "$PERF_PID" 2>/dev/null || true
    fi
    if [ -n "$BROKER" ]; then stop_broker; fi
}
trap cleanup EXIT
# Ctrl-C: warren-perf stops its run, prints its summary and exits with
# 130 (bash, seeing its child exit normally, would not run the trap).
INTERRUPTED=""
trap 'INTERRUPTED=1' INT TERM

# field JSON NAME: a number or string field of a one-line JSON object.
field() { grep -o "\"$2\":[^,}]*" <<<"$1" | head -1 | cut -d: -f2 | tr -d '"'; }

# with JSON NAME VALUE: the object with one more field.
with() { echo "${1%\}},\"$2\":$3}"; }

scenario_desc() {
    case $1 in
    fanin) echo "fanin: $PUBLISHERS pubs → bench/# → 1 sub, ${SIZE} B, QoS 0" ;;
    qos1) echo "qos1: 1 pub (≤$INFLIGHT in flight) → 1 sub, ${SIZE} B, QoS 1" ;;
    idle) echo "idle: $CONNECTIONS connections, keep-alive 600 s" ;;
    esac
}

# measure_pubsub BROKER SCENARIO RUN: OUT is the tool's JSON line, or empty.
measure_pubsub() {
    local log=$WORK/$1-$2-$3.log json=$WORK/$1-$2-$3.json rc=0
    "$PERF" mqtt --scenario "$2" --broker "127.0.0.1:$MQTT_PORT" \
        --duration "$DURATION" --publishers "$PUBLISHERS" --size "$SIZE" \
        --inflight "$INFLIGHT" --broker-pid "$BROKER_PID" --json >"$json" 2>"$log" || rc=$?
    [ "$rc" = 130 ] && INTERRUPTED=1
    OUT=$(tail -n 1 "$json")
    if [ -z "$OUT" ] || [ "$(field "$OUT" failed)" = true ]; then
        say "$1 $2 failed, see $log:"
        tail -n 3 "$log" >&2
    fi
    if [ -n "$OUT" ]; then
        OUT=$(with "$OUT" key "$(field "$OUT" receive_rate)")
    fi
}

# measure_idle BROKER RUN: OUT is the tool's JSON line with the broker's RSS
# (kB) before and after and bytes per connection, or empty.
measure_idle() {
    local log=$WORK/$1-idle-$2.log json=$WORK/$1-idle-$2.json before after per
    sleep "$SETTLE"
    before=$(rss_kb "$BROKER_PID")
    : >"$log"
    "$PERF" mqtt --scenario idle --broker "127.0.0.1:$MQTT_PORT" --connections "$CONNECTIONS" \
        --duration "$IDLE_HOLD" --json >"$json" 2>"$log" &
    PERF_PID=$!
    # Wait until they are all open (the tool says so), let the broker settle.
    until grep -q "connections open in" "$log"; do
        kill -0 "$PERF_PID" 2>/dev/null || break
        sleep 0.1
    done
    sleep "$SETTLE"
    after=$(rss_kb "$BROKER_PID")
    local rc=0
    wait "$PERF_PID" || rc=$?
    # A signal ends `wait` early; the tool had it too and is finishing.
    if kill -0 "$PERF_PID" 2>/dev/null; then wait "$PERF_PID" || rc=$?; fi
    [ "$rc" = 130 ] && INTERRUPTED=1
    PERF_PID=""
    OUT=$(tail -n 1 "$json")
    if [ -z "$OUT" ] || [ "$(field "$OUT" failed)" = true ]; then
        say "$1 idle failed, see $log:"
        tail -n 3 "$log" >&2
    fi
    [ -n "$OUT" ] || return 0
    per=$(awk -v b="$before" -v a="$after" -v n="$(field "$OUT" connected)" \
        'BEGIN { if (n > 0) printf "%.0f", (a - b) * 1024 / n; else print 0 }')
    OUT=$(with "$(with "$(with "$OUT" rss_before_kb "$before")" rss_after_kb "$after")" key "$per")
}

# median JSON...: the run with the median "key" (receive rate, or RSS per
# idle connection).
median() {
    local line
    for line in "$@"; do
        [ -n "$line" ] && printf '%s\t%s\n' "$(field "$line" key)" "$line"
    done | sort -g | awk -F'\t' '{ a[NR] = $2 } END { if (NR) print a[int((NR + 1) / 2)] }'
}

ROWS=()
# row SCENARIO BROKER JSON RUNS
row() {
    local sc=$1 broker=$2 j=$3 runs=$4 note="" lat r
    if [ -z "$j" ]; then
        ROWS+=("| $(scenario_desc "$sc") | $broker | FAILED | | | |")
    elif [ "$sc" = idle ]; then
        note="$(field "$j" connected) of $CONNECTIONS connected at the end (opened in $(field "$j" open_s) s); RSS $(($(field "$j" rss_before_kb) / 1024)) → $(($(field "$j" rss_after_kb) / 1024)) MiB"
        [ "$(field "$j" failed)" = true ] && note="FAILED: $(field "$j" error); $note"
        ROWS+=("| $(scenario_desc "$sc") | $broker | – | – | $(field "$j" key) B | $note |")
    else
        note="$(field "$j" received) of $(field "$j" published) received"
        if [ "$sc" = qos1 ]; then
            lat=$(grep -o '"latency_us":{[^}]*}' <<<"$j")
            note+=", latency p50 $(printf %.0f "$(field "$lat" p50)") p99 $(printf %.0f "$(field "$lat" p99)") µs"
            [ "$(field "$j" duplicates)" != 0 ] && note+=", $(field "$j" duplicates) duplicates"
        fi
        r=$(field "$j" broker_cpu_us_per_msg)
        [ -n "$r" ] && [ "$r" != null ] && note+=", broker CPU $r µs/msg"
        r=$(field "$j" unanswered)
        [ -n "$r" ] && [ "$r" != 0 ] && note+=", $r publisher(s) still waiting for the broker to handle their messages 10+ s after the end"
        [ "$(field "$j" cut_short)" = true ] && note+=", the subscriber was stopped before all had arrived"
        [ "$(field "$j" failed)" = true ] && note="FAILED; $note"
        # Not all handled: what was written per second bounds the rate.
        r=""
        [ "$(field "$j" unanswered)" != 0 ] && r="≤ "
        ROWS+=("| $(scenario_desc "$sc") | $broker | $(printf %.0f "$(field "$j" receive_rate)") | $r$(printf %.0f "$(field "$j" publish_rate)") | – | $note |")
    fi
    [ "$runs" -gt 1 ] && ROWS[-1]="${ROWS[-1]% |} (median of $runs) |"
    echo "${ROWS[-1]}" >&2
}

table() {
    echo "| scenario | broker | subscriber msg/s | published msg/s | RSS per idle connection | notes |"
    echo "|---|---|--:|--:|--:|---|"
    if [ ${#ROWS[@]} -gt 0 ]; then printf '%s\n' "${ROWS[@]}"; fi
}

REPEAT=${REPEAT:-1}
status=0
for broker in $BROKERS; do
    case $broker in
    warren)
        if ! "$WARREN" --help 2>&1 | grep -q -- '--mqtt-listen'; then
            say "skipping warren: $WARREN --help does not list --mqtt-listen (no MQTT listener in this build yet)"
            ROWS+=("| (all) | warren | skipped: no --mqtt-listen | | | |")
            continue
        fi
        ;;
    mosquitto | rabbitmq) ensure_installed "$broker" ;;
    *)
        say "unknown broker '$broker' (warren, mosquitto or rabbitmq)"
        exit 2
        ;;
    esac
    for sc in $SCENARIOS; do
        case $sc in fanin | qos1 | idle) ;; *)
            say "unknown scenario '$sc' (fanin, qos1 or idle)"
            exit 2
            ;;
        esac
        outs=()
        # A fresh broker for every run: nothing left over from the last.
        for ((run = 1; run <= REPEAT; run++)); do
            say "$broker: $sc (run $run of $REPEAT)"
            OUT=""
            if start_broker "$broker"; then
                if [ "$sc" = idle ]; then
                    measure_idle "$broker" "$run"
                else
                    measure_pubsub "$broker" "$sc" "$run"
                fi
                stop_broker
            fi
            if [ -z "$OUT" ] || [ "$(field "$OUT" failed)" = true ]; then
                status=1
            fi
            outs+=("$OUT")
            if [ -n "$INTERRUPTED" ]; then
                say "interrupted"
                [ ${#outs[@]} -gt 0 ] && row "$sc" "$broker" "$(median "${outs[@]}")" "${#outs[@]}"
                table
                exit 130
            fi
        done
        row "$sc" "$broker" "$(median "${outs[@]}")" "$REPEAT"
    done
done

table
exit $status
