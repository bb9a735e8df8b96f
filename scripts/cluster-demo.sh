#!/usr/bin/env bash
# A cluster on loopback (docs/cluster.md): nats-server with JetStream on 127.0.0.1:4222 and three
# dynsec-broker nodes on 127.0.0.1:1883, 1884 and 1885 sharing one dynamic-security seed file,
# all in a scratch folder under target/cluster-demo. Ctrl-C stops everything it started.
#
#   ./scripts/cluster-demo.sh            # builds the broker and dynsec-ctrl (debug) first
#   DEMO_PASSWORD=… ./scripts/cluster-demo.sh
#
# Then, for example (mosquitto-clients):
#   mosquitto_sub -p 1884 -u admin -P "$DEMO_PASSWORD" -t '$CONTROL/dynamic-security/v1/response' &
#   mosquitto_ctrl -p 1883 -u admin -P "$DEMO_PASSWORD" dynsec createClient dev   # on node a …
#   mosquitto_ctrl -p 1885 -u admin -P "$DEMO_PASSWORD" dynsec getClient dev      # … seen on node c
set -euo pipefail
cd "$(dirname "$0")/.."

nats=$(command -v nats-server || echo /usr/sbin/nats-server)
if [ ! -x "$nats" ]; then
  echo "nats-server is not installed: apt-get install nats-server (Debian ships 2.9.x with JetStream)" >&2
  exit 1
fi
password=${DEMO_PASSWORD:-demo-admin}
broker=target/debug/dynsec-broker
cargo build -q -p dynsec-broker -p dynsec-ctrl
dir=$PWD/target/cluster-demo
rm -rf "$dir" && mkdir -p "$dir"

pids=()
stop() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap stop EXIT INT TERM

"$nats" -a 127.0.0.1 -p 4222 -js -sd "$dir/jetstream" >"$dir/nats.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do grep -q "Server is ready" "$dir/nats.log" && break; sleep 0.1; done

# The seed file, with an admin client holding the admin role of `dynsec init`.
target/debug/dynsec-ctrl dynsec init "$dir/dynamic-security.json" admin "$password" >/dev/null

port=1883
for node in a b c; do
  mkdir -p "$dir/$node"
  cat >"$dir/$node/broker.conf" <<CONF
listener $port 127.0.0.1
allow_anonymous false
plugin /usr/lib/x86_64-linux-gnu/mosquitto_dynamic_security.so
plugin_opt_config_file $dir/dynamic-security.json
cluster_nats_url nats://127.0.0.1:4222
cluster_node_name $node
CONF
  (cd "$dir/$node" && exec "$OLDPWD/$broker" -c broker.conf >broker.log 2>&1) &
  pids+=($!)
  echo "node $node: 127.0.0.1:$port (log: $dir/$node/broker.log)"
  port=$((port + 1))
  sleep 1
done
echo "admin password: $password; Ctrl-C stops the cluster"
wait
