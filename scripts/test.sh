#!/usr/bin/env bash
# Runs every test of the workspace, on a fresh machine too. It installs what the tests need first
# (Debian/Ubuntu, apt-get; nothing is reinstalled when present):
#   - mosquitto 2.0 and its tools (Debian's 2.0.11: the first oracle), openssl, python3;
#   - nats-server (Debian's 2.9.x, with JetStream) for the cluster tests;
#   - for the websockets tests: chromium, node and npm (then `npm ci` in tests/browser for
#     MQTT.js) and python's paho-mqtt;
#   - mosquitto 2.1.2 built from upstream source (the second oracle) by
#     ../shared/oracle/build-mosquitto-2.1.sh into $MOSQUITTO_21_PREFIX, default
#     target/mosquitto-2.1 (kept in the ignored target folder, so later runs reuse it;
#     /opt/mosquitto-2.1 is used when it already holds one).
# Then it builds, starts the Paho interoperability suite (scripts/conformance.sh) in the
# background against the debug broker, runs `cargo test` on the workspace, and fails if either
# failed. Arguments are passed to `cargo test`; DYNSEC_SKIP_CONFORMANCE=1 skips the Paho suite.
set -euo pipefail
cd "$(dirname "$0")/.."

sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
apt_install() {
  echo "installing $* with apt-get" >&2
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "$@" >/dev/null
}

need=()
for tool in mosquitto mosquitto_ctrl mosquitto_passwd mosquitto_pub mosquitto_sub mosquitto_rr; do
  command -v "$tool" >/dev/null 2>&1 || need=(mosquitto mosquitto-clients)
done
command -v openssl >/dev/null 2>&1 || need+=(openssl)
command -v python3 >/dev/null 2>&1 || need+=(python3)
# The websockets browser test (tests/tests/websockets_browser.rs): Debian's Chromium, and node/npm
# for MQTT.js (tests/browser/package-lock.json).
[ -x /usr/bin/chromium ] || need+=(chromium)
command -v node >/dev/null 2>&1 || need+=(nodejs)
# The cluster tests (tests/tests/e2e/cluster.rs): nats-server with JetStream (Debian's 2.9.x).
command -v nats-server >/dev/null 2>&1 || [ -x /usr/sbin/nats-server ] || need+=(nats-server)
command -v npm >/dev/null 2>&1 || need+=(npm)
[ ${#need[@]} -eq 0 ] || apt_install "${need[@]}"
if [ ! -f tests/browser/node_modules/mqtt/dist/mqtt.min.js ]; then
  (cd tests/browser && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error)
fi
# paho-mqtt's websockets transport (tests/tests/websockets.rs).
if ! python3 -c 'import paho.mqtt.client' 2>/dev/null; then
  python3 -m pip install --quiet 'paho-mqtt==2.1.0' 2>/dev/null \
    || python3 -m pip install --quiet --break-system-packages 'paho-mqtt==2.1.0'
fi

if [ -z "${MOSQUITTO_21_PREFIX:-}" ]; then
  if [ -x /opt/mosquitto-2.1/sbin/mosquitto ]; then
    MOSQUITTO_21_PREFIX=/opt/mosquitto-2.1
  else
    MOSQUITTO_21_PREFIX=$PWD/target/mosquitto-2.1
  fi
fi
export MOSQUITTO_21_PREFIX
if [ ! -x "$MOSQUITTO_21_PREFIX/sbin/mosquitto" ]; then
  echo "building the mosquitto 2.1.2 oracle into $MOSQUITTO_21_PREFIX (about 2 minutes)" >&2
  ../shared/oracle/build-mosquitto-2.1.sh "$MOSQUITTO_21_PREFIX" >/dev/null
fi

cargo test --workspace --all-targets --no-run "$@"

conformance_log=$(mktemp)
conformance=""
if [ "${DYNSEC_SKIP_CONFORMANCE:-0}" != 1 ]; then
  # The --no-run build above already linked target/debug/dynsec-broker (the broker's own
  # integration tests need it). `cargo build -p dynsec-broker` alone would resolve features
  # differently and recompile much of the dependency tree for nothing.
  [ -x target/debug/dynsec-broker ] || cargo build -p dynsec-broker
  scripts/conformance.sh > "$conformance_log" 2>&1 &
  conformance=$!
fi

status=0
cargo test --workspace --all-targets "$@" || status=$?

if [ -n "$conformance" ]; then
  wait "$conformance" || status=1
  echo "---- Paho interoperability suite (scripts/conformance.sh) ----"
  cat "$conformance_log"
fi
rm -f "$conformance_log"
exit $status
