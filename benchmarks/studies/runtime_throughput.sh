#!/usr/bin/env bash
# The runtime-throughput measurements: `wbc-edge bench --stream` on a folder of crops (INT8 and
# FP32 student), on the BCCD smear fields (finder), and on a 30 frames/s video with --realtime.
# Each run is its own process, so each peak RSS belongs to that run alone.
#
#   benchmarks/studies/runtime_throughput.sh OUT_DIR INT8.onnx FP32.onnx VIDEO.mp4 [PAUSE_PID_FILE]
#
# RUNS=REGEX keeps only the runs whose name matches (e.g. RUNS='fields|video').
#
# On a machine shared with a training run, PAUSE_PID_FILE names its pid: the job is stopped
# (SIGSTOP) for these measurements only and always continued on exit, whatever happens; the
# whole set is capped at 230 s so the pause stays under 4 minutes.
set -euo pipefail

out=$1 int8=$2 fp32=$3 video=$4 pidfile=${5:-}
data=${WBC_EDGE_SHARED_DATA:-../shared/data}
bin=${WBC_EDGE_BIN:-.venv/bin/wbc-edge}
mkdir -p "$out"

if [[ -n "$pidfile" && -f "$pidfile" ]]; then
    pid=$(cat "$pidfile")
    trap 'kill -CONT "$pid" 2>/dev/null || true; echo "continued $pid at $(date -u +%T)"' EXIT
    kill -STOP "$pid"
    echo "paused $pid at $(date -u +%T)"
fi

deadline=$((SECONDS + 230))
bench() {  # NAME ARGS...: one bench --stream run with the machine's load before and after
    local name=$1
    shift
    if [[ ! "$name" =~ ${RUNS:-.} ]]; then
        return 0
    fi
    local left=$((deadline - SECONDS))
    if ((left < 20)); then
        echo "skipped $name: the pause budget is spent"
        return 0
    fi
    echo "$name before: $(uptime)"
    timeout "$left" "$bin" bench --stream "$@" --out "$out" --name "$name" > "$out/$name.log" 2>&1 \
        || echo "$name failed (exit $?): see $out/$name.log"
    echo "$name after: $(uptime)"
}

for rep in 1 2; do
    bench "crops-int8-$rep" "$data/pbc9" --student "$int8"
    bench "crops-fp32-$rep" "$data/pbc9" --student "$fp32"
done
bench fields-int8 "$data/bccd-smears/JPEGImages" --smear --student "$int8"
bench video-int8-realtime "$video" --smear --realtime --student "$int8"
