#!/usr/bin/env bash
# Streams side by side (issue 20): the same `warren-perf stream` client
# against warren and RabbitMQ (Debian's 3.10, streams over AMQP 0-9-1, no
# stream plugin needed), each run on a freshly started broker with a fresh
# data directory under target/, stopped and deleted afterwards (also on
# Ctrl-C or failure). Prints a markdown table (rows also on stderr).
#
#   benches/streams.sh                               # rate on both brokers
#   BROKERS=warren REPEAT=3 benches/streams.sh
#   BROKERS=warren SCENARIOS=big BIG_MESSAGES=9000000 benches/streams.sh
#
# Scenarios:
#   rate  PUBLISHERS publishers publish MESSAGES messages of SIZE bytes to a
#         new stream with publisher confirms (at most CONFIRM unconfirmed
#         each), then CONSUMERS consumers each read all of it from `first`
#         (prefetch PREFETCH, ack with multiple=true every PREFETCH/2) and
#         check that its offsets are contiguous and complete: confirmed
#         msg/s, each consumer's msg/s, broker CPU per message and the
#         broker's RSS (start / peak / end) in each phase
#   big   the same with BIG_MESSAGES of BIG_SIZE bytes (default 9 M of
#         1 KiB, about 9.7 GB of log): what matters is the broker's RSS while
#         CONSUMERS readers go through the whole log; the log's size on disk
#         is measured before the broker stops
#
# Environment:
#   BROKERS      which brokers, in order (default: warren rabbitmq)
#   SCENARIOS    which scenarios, in order (default: rate)
#   MESSAGES     rate: messages published (default 5000000)
#   SIZE         rate: body bytes (default 16)
#   PUBLISHERS   publisher connections (default 4)
#   CONFIRM      unconfirmed messages per publisher at most (default 1000)
#   CONSUMERS    consumers reading from first (default 4)
#   PREFETCH     each consumer's prefetch (default 1000)
#   BIG_MESSAGES, BIG_SIZE   big: messages and body bytes (default 9000000, 1024)
#   MIN_FREE_GB  big: refuse to start unless the disk under target/ keeps
#                this much free after the log is written (default 20)
#   STALL        seconds without progress before a phase fails (default 60)
#   REPEAT=N     run each scenario N times (fresh broker each time) and
#                report the median run (by the slowest consumer's rate)
#   WARREN_ARGS  more arguments for warren
#   WARREN       the warren binary (default target/release/warren)
#   SKIP_BUILD=1 use the release binaries as they are
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
BROKERS=${BROKERS:-warren rabbitmq}
SCENARIOS=${SCENARIOS:-rate}
MESSAGES=${MESSAGES:-5000000}
SIZE=${SIZE:-16}
PUBLISHERS=${PUBLISHERS:-4}
CONFIRM=${CONFIRM:-1000}
CONSUMERS=${CONSUMERS:-4}
PREFETCH=${PREFETCH:-1000}
BIG_MESSAGES=${BIG_MESSAGES:-9000000}
BIG_SIZE=${BIG_SIZE:-1024}
MIN_FREE_GB=${MIN_FREE_GB:-20}
STALL=${STALL:-60}
REPEAT=${REPEAT:-1}
WARREN_ARGS=${WARREN_ARGS:-}
WORK=$ROOT/target/bench-streams
DATA=$ROOT/target/bench-streams-data
PERF=$ROOT/target/release/warren-perf
WARREN=${WARREN:-$ROOT/target/release/warren}
RABBIT_BIN=/usr/lib/rabbitmq/bin

say() { echo "streams.sh: $*" >&2; }

if [ -z "${SKIP_BUILD:-}" ]; then
    cargo build --release --bin warren --bin warren-perf >&2
fi

mkdir -p "$WORK"
RUN_ID=$$

# What is running now, for the EXIT trap.
BROKER=""        # name of the broker running, if any
BROKER_CHILD=""  # the process this script started for it
BROKER_PID=""    # the process whose memory and CPU are measured
BROKER_DATA=""   # its data directory (deleted when it stops)
PERF_PID=""
RABBIT_NODE=""
EPMD_PORT=""
EPMD_CHILD=""
AMQP_PORT=""

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

rabbitmqctl() {
    ERL_EPMD_PORT=$EPMD_PORT timeout 120 "$RABBIT_BIN/rabbitmqctl" -n "$RABBIT_NODE" "$@"
}

# our_node PID: the process is the RabbitMQ node this script started.
our_node() {
    [ -n "$1" ] && grep -qz "^RABBITMQ_NODENAME=$RABBIT_NODE\$" "/proc/$1/environ" 2>/dev/null
}

start_warren() {
    BROKER_DATA=$DATA/warren
    rm -rf "$BROKER_DATA"
    mkdir -p "$DATA"
    # shellcheck disable=SC2086 # WARREN_ARGS: several words
    "$WARREN" --listen "127.0.0.1:$AMQP_PORT" --data-dir "$BROKER_DATA" \
        --no-management --no-prometheus $WARREN_ARGS </dev/null >"$WORK/warren.log" 2>&1 &
    BROKER_CHILD=$!
    BROKER_PID=$BROKER_CHILD
    wait_port "$AMQP_PORT" 30
}

start_rabbitmq() {
    local base=$WORK/rabbitmq dist
    dist=$(free_port)
    RABBIT_NODE=warren-bench-streams-$RUN_ID@localhost
    BROKER_DATA=$DATA/rabbitmq
    rm -rf "$base" "$BROKER_DATA"
    mkdir -p "$base/log" "$DATA"
    # A private epmd, this script's child (the node would otherwise start
    # a shared daemon that outlives it).
    EPMD_PORT=$(free_port)
    epmd -port "$EPMD_PORT" </dev/null >"$base/epmd.log" 2>&1 &
    EPMD_CHILD=$!
    wait_port "$EPMD_PORT" 10 || return 1
    echo "[]." >"$base/enabled_plugins"
    cat >"$base/rabbitmq.conf" <<EOF
# The machine is shared: no more than 4 GB.
vm_memory_high_watermark.absolute = 4GB
EOF
    # The scripts themselves, not Debian's wrappers in /usr/sbin (those
    # switch to the rabbitmq user, which cannot use target/). A stream's
    # log lives under the mnesia directory (osiris), so that is the data
    # directory.
    ERL_EPMD_PORT=$EPMD_PORT \
        RABBITMQ_NODENAME=$RABBIT_NODE \
        RABBITMQ_NODE_IP_ADDRESS=127.0.0.1 \
        RABBITMQ_NODE_PORT=$AMQP_PORT \
        RABBITMQ_DIST_PORT=$dist \
        RABBITMQ_MNESIA_BASE=$BROKER_DATA \
        RABBITMQ_LOG_BASE=$base/log \
        RABBITMQ_ENABLED_PLUGINS_FILE=$base/enabled_plugins \
        RABBITMQ_CONFIG_FILE=$base/rabbitmq \
        "$RABBIT_BIN/rabbitmq-server" </dev/null >"$base/stdout.log" 2>&1 &
    BROKER_CHILD=$!
    wait_port "$AMQP_PORT" 120 || return 1
    rabbitmqctl await_startup >/dev/null
    # A fresh node enables every feature flag; say so for the record.
    rabbitmqctl enable_feature_flag stream_queue >/dev/null 2>&1 || true
    BROKER_PID=$(rabbitmqctl eval 'list_to_integer(os:getpid()).' | tr -dc 0-9)
    [ -n "$BROKER_PID" ]
}

ensure_installed() { # BROKER
    case $1 in
    rabbitmq) [ -x "$RABBIT_BIN/rabbitmq-server" ] && return ;;
    *) return ;;
    esac
    say "installing rabbitmq-server (apt-get)"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q rabbitmq-server >&2 ||
        { apt-get update -q >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q rabbitmq-server >&2; }
}

start_broker() { # BROKER
    AMQP_PORT=$(free_port)
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
        our_node "$BROKER_PID" && vm=$BROKER_PID
        ERL_EPMD_PORT=$EPMD_PORT timeout 30 "$RABBIT_BIN/rabbitmqctl" -n "$RABBIT_NODE" \
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
    # The logs are large: never leave one behind.
    if [ -n "$BROKER_DATA" ]; then rm -rf "$BROKER_DATA"; fi
    BROKER="" BROKER_CHILD="" BROKER_PID="" BROKER_DATA="" RABBIT_NODE="" EPMD_PORT="" EPMD_CHILD=""
}

cleanup() {
    if [ -n "$PERF_PID" ]; then
        kill -TERM "$PERF_PID" 2>/dev/null || true
        wait "$PERF_PID" 2>/dev/null || true
    fi
    if [ -n "$BROKER" ]; then stop_broker; fi
}
trap cleanup EXIT
INTERRUPTED=""
trap 'INTERRUPTED=1' INT TERM

# field JSON NAME: a number, string or [list] field of a one-line JSON object.
field() {
    grep -o "\"$2\":\(\[[^]]*\]\|[^,}]*\)" <<<"$1" | head -1 | cut -d: -f2- | tr -d '"'
}

# with JSON NAME VALUE: the object with one more field.
with() { echo "${1%\}},\"$2\":$3}"; }

# measure BROKER SCENARIO RUN: OUT is the tool's JSON line, or empty.
measure() {
    local log=$WORK/$1-$2-$3.log json=$WORK/$1-$2-$3.json rc=0 n=$MESSAGES size=$SIZE
    if [ "$2" = big ]; then n=$BIG_MESSAGES size=$BIG_SIZE; fi
    # The stream is kept until its size on disk is read.
    "$PERF" stream --uri "amqp://guest:guest@127.0.0.1:$AMQP_PORT/%2f" \
        --messages "$n" --size "$size" --publishers "$PUBLISHERS" --confirm "$CONFIRM" \
        --consumers "$CONSUMERS" --prefetch "$PREFETCH" --stall "$STALL" --keep \
        --broker-pid "$BROKER_PID" --json >"$json" 2>"$log" &
    PERF_PID=$!
    wait "$PERF_PID" || rc=$?
    if kill -0 "$PERF_PID" 2>/dev/null; then wait "$PERF_PID" || rc=$?; fi
    PERF_PID=""
    [ "$rc" = 130 ] && INTERRUPTED=1
    OUT=$(tail -n 1 "$json")
    if [ -z "$OUT" ] || [ "$(field "$OUT" failed)" = true ]; then
        say "$1 $2 failed (exit $rc), see $log:"
        grep -E 'FAILED|NOT OK|error|stalled' "$log" | head -n 20 >&2 || tail -n 5 "$log" >&2
    fi
    if [ -n "$OUT" ]; then
        local du
        du=$(du -sb "$BROKER_DATA" 2>/dev/null | cut -f1)
        OUT=$(with "$(with "$OUT" data_bytes "${du:-0}")" key "$(field "$OUT" read_min_rate)")
    fi
}

# median JSON...: the run with the median "key".
median() {
    local line
    for line in "$@"; do
        [ -n "$line" ] && printf '%s\t%s\n' "$(field "$line" key)" "$line"
    done | sort -g | awk -F'\t' '{ a[NR] = $2 } END { if (NR) print a[int((NR + 1) / 2)] }'
}

num() { [ -n "$1" ] && [ "$1" != null ] && printf '%.0f' "$1" | sed ':a;s/\B[0-9]\{3\}\>/,&/;ta' || echo "–"; }
mib() { [ -n "$1" ] && [ "$1" != null ] && awk -v k="$1" 'BEGIN { printf "%.1f", k / 1024 }' || echo "–"; }

ROWS=()
# row SCENARIO BROKER JSON RUNS
row() {
    local sc=$1 broker=$2 j=$3 runs=$4 rates="" r note=""
    if [ -z "$j" ]; then
        ROWS+=("| $sc | $broker | FAILED | | | | | |")
        echo "${ROWS[-1]}" >&2
        return
    fi
    for r in $(field "$j" read_rates | tr -d '[]' | tr , ' '); do
        rates+="${rates:+ / }$(num "$r")"
    done
    [ "$(field "$j" publish_ok)" = false ] && note+="publish FAILED; "
    [ "$(field "$j" read_ok)" = false ] && note+="read NOT OK: gaps $(field "$j" read_gaps), repeats $(field "$j" read_repeats); "
    [ "$(field "$j" failed)" = true ] && [ -z "$note" ] && note+="FAILED: $(field "$j" error); "
    note+="$(num "$(field "$j" messages)") × $(field "$j" size) B, log on disk $(awk -v b="$(field "$j" data_bytes)" 'BEGIN { printf "%.2f GB", b / 1e9 }'), read $(awk -v b="$(field "$j" data_bytes)" -v c="$(field "$j" consumers)" 'BEGIN { printf "%.1f GB", b * c / 1e9 }') in all"
    [ "$runs" -gt 1 ] && note+=" (median of $runs)"
    ROWS+=("| $sc | $broker | $(num "$(field "$j" publish_rate)") | $(field "$j" pub_broker_cpu_us_per_msg) | $rates | $(field "$j" read_broker_cpu_us_per_msg) | $(mib "$(field "$j" read_rss_start_kb)") / $(mib "$(field "$j" read_rss_peak_kb)") / $(mib "$(field "$j" read_rss_end_kb)") | $note |")
    echo "${ROWS[-1]}" >&2
}

table() {
    echo "| scenario | broker | publish, confirmed msg/s | broker CPU µs/msg published | read msg/s per consumer | broker CPU µs/delivery | broker RSS while reading, start / peak / end MiB | notes |"
    echo "|---|---|--:|--:|--:|--:|--:|---|"
    if [ ${#ROWS[@]} -gt 0 ]; then printf '%s\n' "${ROWS[@]}"; fi
}

status=0
for broker in $BROKERS; do
    case $broker in
    warren) ;;
    rabbitmq) ensure_installed rabbitmq ;;
    *)
        say "unknown broker '$broker' (warren or rabbitmq)"
        exit 2
        ;;
    esac
    for sc in $SCENARIOS; do
        case $sc in
        rate) ;;
        big)
            # Room for the log (about BIG_SIZE + 100 bytes a message) and
            # MIN_FREE_GB more.
            need=$(awk -v n="$BIG_MESSAGES" -v s="$BIG_SIZE" -v f="$MIN_FREE_GB" \
                'BEGIN { printf "%.0f", (n * (s + 100) / 1e9 + f) * 1e6 }')
            avail=$(df -Pk "$ROOT/target" | awk 'NR == 2 { print $4 }')
            if [ "$avail" -lt "$need" ]; then
                say "big: $((avail / 1000000)) GB free under target/, $((need / 1000000)) GB needed (MIN_FREE_GB=$MIN_FREE_GB); skipped"
                ROWS+=("| big | $broker | skipped: not enough disk | | | | | |")
                status=1
                continue
            fi
            ;;
        *)
            say "unknown scenario '$sc' (rate or big)"
            exit 2
            ;;
        esac
        outs=()
        for ((run = 1; run <= REPEAT; run++)); do
            say "$broker: $sc (run $run of $REPEAT) $(date -u +%T)"
            OUT=""
            if start_broker "$broker"; then
                measure "$broker" "$sc" "$run"
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
