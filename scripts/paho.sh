#!/usr/bin/env bash
# Runs the Eclipse Paho interoperability suite (../shared/conformance/run-paho.sh) against a broker
# started here on an ephemeral 127.0.0.1 port, set up as the suite wants: anonymous clients allowed
# everything through dynamic security's anonymous group, except subscribing to test/nosubscribe;
# for the v5 suite, keepalives capped at 60 seconds (`max_keepalive 60`, see below).
#
#   scripts/paho.sh [--broker ours|mosquitto-2.1|mosquitto-2.0] [v3|v5|all] [TEST_REGEX]
#
# `ours` runs $DYNSEC_BROKER, else target/release/dynsec-broker if it exists, else
# target/debug/dynsec-broker (build first). The mosquitto 2.1 oracle is looked up in $MOSQUITTO_21_PREFIX (default /opt/mosquitto-2.1,
# built by ../shared/oracle/build-mosquitto-2.1.sh). Prints the suite's per-test lines and its
# summary; exits non-zero when a test failed. Stops only the broker it started, by its PID.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

broker=ours
if [ "${1:-}" = "--broker" ]; then broker=$2; shift 2; fi
which=${1:-all}
filter=${2:-.}
suite="$root/../shared/conformance/run-paho.sh"
[ -x "$suite" ] || { echo "paho.sh: $suite not found (../shared beside the checkout)" >&2; exit 2; }

# The v5 suite's test_server_keep_alive expects a broker that caps keepalives at 60 seconds
# (CONNACK Server Keep Alive 60 for a client asking 120). With that cap, mosquitto 2.1 (and this
# broker) refuse MQTT 3.1.1 clients without a keepalive, which the v3 suite uses: each suite gets
# a broker of its own.
if [ "$which" = all ]; then
  status=0
  "$0" --broker "$broker" v3 "$filter" || status=1
  "$0" --broker "$broker" v5 "$filter" || status=1
  exit $status
fi

work=$(mktemp -d)
pid=""
cleanup() { [ -n "$pid" ] && kill "$pid" 2>/dev/null; wait 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
password="paho-admin-$RANDOM$RANDOM"
plugin=/usr/lib/x86_64-linux-gnu/mosquitto_dynamic_security.so
prefix=${MOSQUITTO_21_PREFIX:-/opt/mosquitto-2.1}
case $broker in
  mosquitto-2.1) plugin=$prefix/lib/mosquitto_dynamic_security.so ;;
esac
cat > "$work/broker.conf" <<EOF
listener $port 127.0.0.1
allow_anonymous true
plugin $plugin
plugin_opt_config_file $work/dynamic-security.json
EOF
[ "$which" = v5 ] && echo "max_keepalive 60" >> "$work/broker.conf"
# Extra lines for our broker only (e.g. DYNSEC_PAHO_EXTRA_CONFIG="gate_fleet_hub true").
[ "$broker" = ours ] && [ -n "${DYNSEC_PAHO_EXTRA_CONFIG:-}" ] && printf '%s\n' "$DYNSEC_PAHO_EXTRA_CONFIG" >> "$work/broker.conf"

case $broker in
  ours)
    bin=${DYNSEC_BROKER:-$root/target/release/dynsec-broker}
    [ -x "$bin" ] || bin=$root/target/debug/dynsec-broker
    [ -x "$bin" ] || { echo "paho.sh: build dynsec-broker first" >&2; exit 2; }
    DYNSEC_ADMIN_PASSWORD=$password "$bin" -c "$work/broker.conf" > "$work/broker.log" 2>&1 &
    pid=$!
    ;;
  mosquitto-2.0 | mosquitto-2.1)
    echo "user root" >> "$work/broker.conf"
    # mosquitto 2.0 has no way to create the file: write the admin with `mosquitto_ctrl dynsec init`.
    mosquitto_ctrl dynsec init "$work/dynamic-security.json" admin "$password" > /dev/null
    if [ "$broker" = mosquitto-2.1 ]; then
      LD_LIBRARY_PATH=$prefix/lib "$prefix/sbin/mosquitto" -c "$work/broker.conf" > "$work/broker.log" 2>&1 &
    else
      mosquitto -c "$work/broker.conf" > "$work/broker.log" 2>&1 &
    fi
    pid=$!
    ;;
  *) echo "paho.sh: unknown broker '$broker'" >&2; exit 2 ;;
esac

for _ in $(seq 100); do
  if python3 -c "import socket; socket.create_connection(('127.0.0.1', $port), 0.2)" 2>/dev/null; then break; fi
  sleep 0.1
done

setup='{"commands":[
 {"command":"createRole","rolename":"all"},
 {"command":"addRoleACL","rolename":"all","acltype":"publishClientSend","topic":"#","allow":true},
 {"command":"addRoleACL","rolename":"all","acltype":"publishClientReceive","topic":"#","allow":true},
 {"command":"addRoleACL","rolename":"all","acltype":"subscribePattern","topic":"#","allow":true},
 {"command":"addRoleACL","rolename":"all","acltype":"unsubscribePattern","topic":"#","allow":true},
 {"command":"addRoleACL","rolename":"all","acltype":"subscribeLiteral","topic":"test/nosubscribe","allow":false,"priority":10},
 {"command":"createGroup","groupname":"anon"},
 {"command":"addGroupRole","groupname":"anon","rolename":"all"},
 {"command":"setAnonymousGroup","groupname":"anon"}]}'
reply=$(mosquitto_rr -h 127.0.0.1 -p "$port" -u admin -P "$password" -t '$CONTROL/dynamic-security/v1' \
  -e '$CONTROL/dynamic-security/v1/response' -W 10 -m "$setup")
if echo "$reply" | grep -q '"error"'; then
  echo "paho.sh: setup failed: $reply" >&2
  exit 2
fi
echo "paho: $broker on 127.0.0.1:$port"
"$suite" "$port" "$which" "$filter"
