#!/usr/bin/env bash
# Run test suites at the same time, each one's output kept whole in its own log, printed one after the
# other once all have finished; exits 1 when any suite failed (each suite's exit code is printed).
# CI time: the static gates (ansible-test, ansible-lint, galaxy-importer) mostly use the CPU in short
# bursts and so run alongside the collection's pytest instead of after it (see README "Tests").
#
#   scripts/parallel.sh LOGDIR NAME 'COMMAND' [NAME 'COMMAND' ...]
#
# COMMAND runs under bash -c from the current directory. Shared set-up (scripts/install-collections.sh)
# must be done before: the suites must not write the same files.
set -euo pipefail
if [ $# -lt 3 ] || [ $(($# % 2)) -ne 1 ]; then
    echo "usage: $0 LOGDIR NAME 'COMMAND' [NAME 'COMMAND' ...]" >&2
    exit 2
fi
logdir=$1
shift
mkdir -p "$logdir"
names=()
pids=()
starts=()
while [ $# -gt 0 ]; do
    name=$1 cmd=$2
    shift 2
    echo "=== $name: started ($cmd), log $logdir/$name.log"
    bash -c "$cmd" >"$logdir/$name.log" 2>&1 </dev/null &
    names+=("$name")
    pids+=($!)
    starts+=("$SECONDS")
done
# An interrupted run must not leave suites behind.
trap 'kill "${pids[@]}" 2>/dev/null || true' INT TERM
rcs=()
ends=()
# wait -n -p (bash >= 5.1): each suite's exit code and end time as it finishes.
running=("${pids[@]}")
while [ ${#running[@]} -gt 0 ]; do
    rc=0
    done_pid=
    wait -n -p done_pid "${running[@]}" || rc=$?
    if [ -z "$done_pid" ]; then
        echo "parallel: wait failed (exit $rc) with ${#running[@]} suite(s) running" >&2
        exit 1
    fi
    still=()
    for i in "${!pids[@]}"; do
        if [ "${pids[$i]}" = "$done_pid" ]; then
            rcs[i]=$rc
            ends[i]=$SECONDS
        elif [ -z "${rcs[i]:-}" ]; then
            still+=("${pids[$i]}")
        fi
    done
    running=("${still[@]}")
done
failed=()
for i in "${!names[@]}"; do
    echo
    echo "=================== ${names[$i]} (output) ==================="
    cat "$logdir/${names[$i]}.log"
done
echo
for i in "${!names[@]}"; do
    echo "=== ${names[$i]}: exit ${rcs[$i]} after $((ends[i] - starts[i])) s"
    [ "${rcs[$i]}" -eq 0 ] || failed+=("${names[$i]} (exit ${rcs[$i]})")
done
if [ ${#failed[@]} -gt 0 ]; then
    echo "parallel: failed: ${failed[*]}" >&2
    exit 1
fi
echo "parallel: all passed: ${names[*]}"
