#!/usr/bin/env bash
# Runs every test of the workspace. The interop tests drive the real mosquitto 2.0 broker and its
# tools, so they are installed first when missing (Debian/Ubuntu: apt-get).
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
for tool in mosquitto mosquitto_ctrl mosquitto_passwd mosquitto_pub mosquitto_sub mosquitto_rr openssl; do
  command -v "$tool" >/dev/null 2>&1 || need+=("$tool")
done
if [ ${#need[@]} -gt 0 ]; then
  echo "installing mosquitto, mosquitto-clients, openssl (missing: ${need[*]})" >&2
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq mosquitto mosquitto-clients openssl >/dev/null
fi

cargo test --workspace --all-targets "$@"
