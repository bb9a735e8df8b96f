#!/usr/bin/env bash
# Provisions N clients (default 10,000; each createClient with a password, plus addClientRole) on a
# fresh dynsec-broker with `dynsec-ctrl dynsec batch`, prints how long that took and checks with
# listClients that every client exists. The broker runs on an ephemeral port of 127.0.0.1 in a
# temporary directory and is stopped (by its PID) at the end.
#
#   scripts/batch-10k.sh [N] [batch-size]
#
# Release binaries are built first (PROFILE=debug uses the debug ones instead).
set -euo pipefail
cd "$(dirname "$0")/.."

count="${1:-10000}"
batch_size="${2:-500}"
profile="${PROFILE:-release}"
if [ "$profile" = release ]; then
  cargo build --release -q -p dynsec-broker -p dynsec-ctrl
else
  cargo build -q -p dynsec-broker -p dynsec-ctrl
fi
bin="target/$profile"

work="$(mktemp -d)"
broker_pid=""
cleanup() {
  if [ -n "$broker_pid" ]; then kill "$broker_pid" 2>/dev/null || true; wait "$broker_pid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

password="batch-admin-$$"
cat >"$work/broker.conf" <<EOF
listener 0 127.0.0.1
allow_anonymous false
plugin /usr/lib/x86_64-linux-gnu/mosquitto_dynamic_security.so
plugin_opt_config_file $work/dynamic-security.json
EOF
DYNSEC_ADMIN_PASSWORD="$password" "$bin/dynsec-broker" -c "$work/broker.conf" >"$work/broker.log" 2>&1 &
broker_pid=$!

port=""
for _ in $(seq 1 200); do
  port="$(sed -n 's/.*Opening listen socket on 127\.0\.0\.1:\([0-9]*\).*/\1/p' "$work/broker.log" | head -n1)"
  [ -n "$port" ] && break
  kill -0 "$broker_pid" 2>/dev/null || { cat "$work/broker.log" >&2; exit 1; }
  sleep 0.05
done
[ -n "$port" ] || { echo "the broker did not start listening" >&2; cat "$work/broker.log" >&2; exit 1; }

{
  echo "createRole device"
  echo "addRoleACL device publishClientSend \"devices/#\" allow"
  for i in $(seq -w 1 "$count"); do
    echo "createClient device$i -p secret$i"
    echo "addClientRole device$i device"
  done
} >"$work/provision.txt"

ctrl=("$bin/dynsec-ctrl" -h 127.0.0.1 -p "$port" -u admin -P "$password" dynsec)
start=$(date +%s.%N)
"${ctrl[@]}" batch --batch-size "$batch_size" "$work/provision.txt"
end=$(date +%s.%N)

listed=$("${ctrl[@]}" listClients | grep -c '^device' || true)
elapsed=$(awk -v a="$start" -v b="$end" 'BEGIN { print b - a }')
rate=$(awk -v n="$count" -v t="$elapsed" 'BEGIN { print n / t }')
printf 'provisioned %d clients (createClient + addClientRole, batches of %d) in %.2f s (%.0f clients/s, %s build); listClients shows %d\n' \
  "$count" "$batch_size" "$elapsed" "$rate" "$profile" "$listed"
[ "$listed" -eq "$count" ] || { echo "expected $count clients, listClients shows $listed" >&2; exit 1; }
