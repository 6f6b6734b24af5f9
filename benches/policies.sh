#!/usr/bin/env bash
# Policies on the message path: warren-perf scenarios 1 and 2 against a
# fresh warren, again after 10,000 queues were declared, again after 1,000
# policies matching them were set (benches/policies.py), the policy
# change timings, and once more after the policies were cleared.
#
#   benches/policies.sh            (builds warren and warren-perf in release)
#
# Environment: DURATION (default 5), REPEAT (default 3), PYTHON (default
# target/pyvenv-mgmt/bin/python, which `cargo test` creates), QUEUES,
# POLICIES.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --bins -q
PYTHON=${PYTHON:-target/pyvenv-mgmt/bin/python}
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
AMQP=$(free_port)
MGMT=$(free_port)
DATA=$(mktemp -d)
target/release/warren --listen "127.0.0.1:$AMQP" --management-listen "127.0.0.1:$MGMT" \
    --no-prometheus --data-dir "$DATA" >"$DATA/log" 2>&1 &
PID=$!
trap 'kill $PID 2>/dev/null; wait $PID 2>/dev/null; rm -rf "$DATA"' EXIT
for _ in $(seq 50); do
    (echo >"/dev/tcp/127.0.0.1/$AMQP") 2>/dev/null && break
    sleep 0.1
done
URI="amqp://guest:guest@127.0.0.1:$AMQP/%2f"
export BROKER_PID=$PID WARREN_PERF=target/release/warren-perf
export DURATION=${DURATION:-5} REPEAT=${REPEAT:-3} SCENARIOS="1 2"
SIZE=(--queues "${QUEUES:-10000}" --policies "${POLICIES:-1000}")
benches/run.sh "$URI" "fresh"
"$PYTHON" benches/policies.py --amqp-port "$AMQP" --mgmt-port "$MGMT" "${SIZE[@]}" \
    --setup queues --no-measure
NO_HEADER=1 benches/run.sh "$URI" "${QUEUES:-10000} queues, no policies"
"$PYTHON" benches/policies.py --amqp-port "$AMQP" --mgmt-port "$MGMT" "${SIZE[@]}" \
    --setup policies --no-measure
NO_HEADER=1 benches/run.sh "$URI" "${QUEUES:-10000} queues, ${POLICIES:-1000} policies"
"$PYTHON" benches/policies.py --amqp-port "$AMQP" --mgmt-port "$MGMT" "${SIZE[@]}" --setup none
# And without them again: what is left of the difference is noise.
"$PYTHON" benches/policies.py --amqp-port "$AMQP" --mgmt-port "$MGMT" "${SIZE[@]}" \
    --setup clear --no-measure
NO_HEADER=1 benches/run.sh "$URI" "${QUEUES:-10000} queues, policies cleared"
echo
echo "broker's own timings (INFO log):"
grep -E "policy '(p-0|all)'" "$DATA/log" | tail -n 8 || true
