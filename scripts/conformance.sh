#!/usr/bin/env bash
# The Paho interoperability suite as CI runs it: MQTT 3.1.1 and MQTT 5 against several instances
# of dynsec-broker at once, compared with tests/data/paho-known-failures.txt. Fails when a test
# outside that list fails, or when a listed test passes (remove it from the list).
#
# The suite runs its tests one after the other and the v5 tests mostly sleep (about 10 s each,
# one of them its 60 s time limit): in one row they took 6 minutes, the v3 tests 1.5. So the v5
# tests are dealt round-robin into $DYNSEC_PAHO_SHARDS groups (default 3), each run against a
# broker of its own beside the v3 tests; they cost little CPU.
#
#   scripts/conformance.sh      # runs $DYNSEC_BROKER, default target/debug/dynsec-broker (build first)
set -uo pipefail
cd "$(dirname "$0")/.."
export DYNSEC_BROKER=${DYNSEC_BROKER:-$PWD/target/debug/dynsec-broker}
shards=${DYNSEC_PAHO_SHARDS:-3}
v5_suite=../shared/conformance/paho-interop/client_test5.py
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
scripts/paho.sh v3 > "$out/0-v3" 2>&1 &
runs=($!)
# The same test names run-paho.sh finds; each group is an anchored alternation of its names.
mapfile -t v5_tests < <(grep -oE '^    def (test[a-zA-Z0-9_]+)' "$v5_suite" 2>/dev/null | awk '{print $2}')
for ((shard = 0; shard < shards; shard++)); do
  names=()
  for ((i = shard; i < ${#v5_tests[@]}; i += shards)); do names+=("${v5_tests[i]}"); done
  [ ${#names[@]} -gt 0 ] || continue
  scripts/paho.sh v5 "^($(IFS='|'; echo "${names[*]}"))\$" > "$out/1-v5-$shard" 2>&1 &
  runs+=($!)
done
wait "${runs[@]}"
cat "$out"/*
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
done < <(grep -hE '^(v3|v5) test' "$out"/*)
ran=$(cat "$out"/* | grep -cE "^(v3|v5) test")
[ "$ran" -ge 37 ] || { echo "conformance: only $ran of 37 tests ran"; status=1; }
[ $status = 0 ] && echo "conformance: as expected"
exit $status
