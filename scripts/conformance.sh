#!/usr/bin/env bash
# The Paho interoperability suite as CI runs it: MQTT 3.1.1 and MQTT 5 against two instances of
# dynsec-broker at once (the v5 tests sleep a lot), compared with tests/data/paho-known-failures.txt.
# Fails when a test outside that list fails, or when a listed test passes (remove it from the list).
#
#   scripts/conformance.sh      # runs $DYNSEC_BROKER, default target/debug/dynsec-broker (build first)
set -uo pipefail
cd "$(dirname "$0")/.."
export DYNSEC_BROKER=${DYNSEC_BROKER:-$PWD/target/debug/dynsec-broker}
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
scripts/paho.sh v3 > "$out/v3" 2>&1 &
v3=$!
scripts/paho.sh v5 > "$out/v5" 2>&1 &
v5=$!
wait $v3 $v5
cat "$out/v3" "$out/v5"
known=$(sed -e 's/#.*//' tests/data/paho-known-failures.txt | awk 'NF {print $1" "$2}')
status=0
while read -r label test result; do
  case $result in ok | FAIL | timeout) ;; *) continue ;; esac
  listed=no
  grep -qx "$label $test" <<< "$known" && listed=yes
  if [ "$result" != ok ] && [ $listed = no ]; then
    echo "conformance: $label $test $result (not a known failure)"; status=1
  elif [ "$result" = ok ] && [ $listed = yes ]; then
    echo "conformance: $label $test passes now: remove it from tests/data/paho-known-failures.txt"; status=1
  fi
done < <(grep -hE '^(v3|v5) test' "$out/v3" "$out/v5")
ran=$(cat "$out/v3" "$out/v5" | grep -cE "^(v3|v5) test")
[ "$ran" -ge 37 ] || { echo "conformance: only $ran of 37 tests ran"; status=1; }
[ $status = 0 ] && echo "conformance: as expected"
exit $status
