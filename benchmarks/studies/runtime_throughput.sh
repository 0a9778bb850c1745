#!/usr/bin/env bash
# The runtime-throughput measurements: `wbc-edge bench --stream` on a folder of crops (INT8 and
# FP32 student), on the BCCD smear fields (finder), and on a 30 frames/s video with --realtime.
# Each run is its own process, so each peak RSS belongs to that run alone.
#
#   benchmarks/studies/runtime_throughput.sh OUT_DIR INT8.onnx FP32.onnx VIDEO.mp4 [PAUSE_PID_FILE]
#
# RUNS=REGEX keeps only the runs whose name matches (e.g. RUNS='fields|video'); TAG=NAME puts
# NAME into every run's name (TAG=224px: crops-224px-int8-1, fields-224px-int8, ...), so two
# models' sets can share one folder for runtime_throughput_report.py.
#
# BEFORE_BIN=PATH also runs each crops row with another wbc-edge (an earlier commit's runtime),
# named crops-before-..., right before the same row of this one, so both share the moment's load.
# Paths are recorded as given: pass repository-relative ones. BUDGET_S caps the whole set (230 s).
#
# On a machine shared with a training run, PAUSE_PID_FILE names its pid: the job (that process
# and its descendants: a driver script's training children) is stopped (SIGSTOP) for these
# measurements only and always continued on exit, whatever happens (and by
# a watchdog after 280 s even if this script is killed); the whole set is capped at 230 s so the
# pause stays under 5 minutes. OUT_DIR/pause.json records the pause and the load average
# (1/5/15 min) before it and after it.
set -euo pipefail

out=$1 int8=$2 fp32=$3 video=$4 pidfile=${5:-}
data=${WBC_EDGE_SHARED_DATA:-../shared/data}
bin=${WBC_EDGE_BIN:-.venv/bin/wbc-edge}
mkdir -p "$out"

loadavg() { cut -d' ' -f1-3 /proc/loadavg; }
tree() {  # PID and all its descendants
    local p
    echo "$1"
    for p in $(ps -o pid= --ppid "$1"); do tree "$p"; done
}
if [[ -n "$pidfile" && -f "$pidfile" ]]; then
    pid=$(tr -d ' \n' < "$pidfile")
    mapfile -t pids < <(tree "$pid")
    load_before=$(loadavg) stopped=$(date -u +%T) t0=$SECONDS
    resume() {
        [[ $BASHPID == "$$" ]] || return 0 # the watchdog's own exit: the script resumes
        kill -CONT "${pids[@]}" 2>/dev/null || true
        kill "${watchdog:-}" 2>/dev/null || true
        local continued
        continued=$(date -u +%T)
        echo "continued $pid at $continued"
        printf '{"pid": %s, "pids": "%s", "stopped": "%s", "continued": "%s", "seconds": %s, ' \
            "$pid" "${pids[*]}" "$stopped" "$continued" "$((SECONDS - t0))" > "$out/pause.json"
        printf '"load_before": "%s", "load_after": "%s"}\n' "$load_before" "$(loadavg)" \
            >> "$out/pause.json"
    }
    trap resume EXIT
    kill -STOP "${pids[@]}"
    (trap - EXIT; sleep 280; kill -CONT "${pids[@]}" 2>/dev/null) &
    watchdog=$!
    echo "paused ${pids[*]} at $stopped (load $load_before)"
fi

deadline=$((SECONDS + ${BUDGET_S:-230}))
bench() {  # NAME ARGS...: one bench --stream run with the machine's load before and after
    local name=$1 bin=${BIN:-$bin}
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

t=${TAG:+$TAG-}
crops() {  # NAME MODEL: the row, after the same row of BEFORE_BIN when given
    if [[ -n "${BEFORE_BIN:-}" ]]; then
        BIN=$BEFORE_BIN bench "crops-before-${1#crops-}" "$data/pbc9" --model "$2"
    fi
    bench "$1" "$data/pbc9" --model "$2"
}
for rep in 1 2; do
    crops "crops-${t}int8-$rep" "$int8"
    crops "crops-${t}fp32-$rep" "$fp32"
done
bench "fields-${t}int8" "$data/bccd-smears/JPEGImages" --smear --model "$int8"
# --realtime on a video file reconnects at its end like a camera: --limit ends the run.
bench "video-${t}int8-realtime" "$video" --smear --realtime --limit 600 --model "$int8"
