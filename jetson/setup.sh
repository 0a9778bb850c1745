#!/usr/bin/env bash
# Put wbc-edge on an NVIDIA Jetson: check the L4T/JetPack release, install the system packages,
# make a venv that sees JetPack's TensorRT bindings, install wbc-edge[runtime,jetson] (pycuda
# built against the device's CUDA), check every import, print the next steps.
#
# Safe to run again: every step checks what is already there. See jetson/README.md.
#
# Usage: sudo jetson/setup.sh [--dry-run] [--venv DIR] [--cpu-only] [--service]
#                              [--lab-user NAME]
#   --service        also install the systemd unit, its user and every folder it uses
#   --lab-user NAME  who may drop images and models and read results (group wbc-edge);
#                    default: the user who ran sudo
#
# Environment (for tests and unusual layouts):
#   WBC_EDGE_ROOT    root the release is read from (default /): /etc/nv_tegra_release and the
#                    dpkg database under it; tests point it at a fake tree.
#   WBC_EDGE_ARCH    machine architecture (default: uname -m); a Jetson is aarch64.
#   WBC_EDGE_VENV    where the venv goes (default /opt/wbc-edge/venv; --venv wins).
#   WBC_EDGE_PYTHON  interpreter the venv is made from (default: the release's Python).
#
# Exit codes: 0 done (or dry run planned), 2 bad usage, 3 not a Jetson, 4 unsupported release
# (or JetPack 5 without --cpu-only), 5 a step or an import check failed.
set -euo pipefail

REPO_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
ROOT="${WBC_EDGE_ROOT:-}"
ROOT="${ROOT%/}"
VENV="${WBC_EDGE_VENV:-/opt/wbc-edge/venv}"
PYTHON="${WBC_EDGE_PYTHON:-}"
CUDA_HOME_DIR="/usr/local/cuda"
SERVICE_USER="wbc-edge"
STATE_DIR="/var/lib/wbc-edge"
ENV_DST="/etc/wbc-edge/wbc-edge.env"
LAB_USER="${SUDO_USER:-}"
ARCH="${WBC_EDGE_ARCH:-$(uname -m)}"
DRY_RUN=0
CPU_ONLY=0
SERVICE=0

say() { printf '%s\n' "$*"; }
warn() { printf 'warning: %s\n' "$*" >&2; }
die() {
  local code="$1"
  shift
  printf 'error: %s\n' "$*" >&2
  exit "$code"
}

usage() {
  sed -n '8,22p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
}

# Run a command, or only print it under --dry-run (quoted so it can be pasted into a shell).
run() {
  if [ "$DRY_RUN" -eq 1 ]; then
    printf '+'
    printf ' %q' "$@"
    printf '\n'
  else
    "$@"
  fi
}

while [ $# -gt 0 ]; do
  case "$1" in
    --dry-run) DRY_RUN=1 ;;
    --cpu-only) CPU_ONLY=1 ;;
    --service) SERVICE=1 ;;
    --venv)
      [ $# -ge 2 ] || die 2 "--venv needs a folder"
      VENV="$2"
      shift
      ;;
    --lab-user)
      [ $# -ge 2 ] || die 2 "--lab-user needs a user name"
      LAB_USER="$2"
      shift
      ;;
    -h | --help)
      usage
      exit 0
      ;;
    *) die 2 "unknown option $1 (see --help)" ;;
  esac
  shift
done

# --- 1. Which L4T release is this? -------------------------------------------------------------
# Every Jetson is aarch64; an x86 PC with a copied release file is not one.
if [ "$ARCH" != "aarch64" ]; then
  die 3 "not a Jetson: this machine is $ARCH (Jetsons are aarch64). setup.sh is for Jetson" \
    "devices flashed with JetPack 5.1 or 6.x; on a PC install with" \
    "\`pip install 'wbc-edge[runtime]'\` instead."
fi
# Two witnesses: the release file L4T writes at flash time and the nvidia-l4t-core package that
# apt upgrades. They agree on a healthy system; when they do not, the package is the truth.
RELEASE_FILE="$ROOT/etc/nv_tegra_release"
L4T_FILE=""
if [ -r "$RELEASE_FILE" ]; then
  release_re='^# R([0-9]+) \(release\), REVISION: ([0-9]+)\.([0-9]+)'
  if [[ "$(head -n 1 "$RELEASE_FILE")" =~ $release_re ]]; then
    L4T_FILE="${BASH_REMATCH[1]}.${BASH_REMATCH[2]}.${BASH_REMATCH[3]}"
  else
    warn "$RELEASE_FILE is not in the L4T format ('# R36 (release), REVISION: 4.3, ...')"
  fi
fi

L4T_PKG=""
if command -v dpkg-query >/dev/null 2>&1; then
  pkg_version="$(dpkg-query --admindir="$ROOT/var/lib/dpkg" -W -f='${Version}' \
    nvidia-l4t-core 2>/dev/null || true)"
  pkg_re='^([0-9]+)\.([0-9]+)\.([0-9]+)'
  if [[ "$pkg_version" =~ $pkg_re ]]; then
    L4T_PKG="${BASH_REMATCH[1]}.${BASH_REMATCH[2]}.${BASH_REMATCH[3]}"
  fi
fi

if [ -z "$L4T_FILE" ] && [ -z "$L4T_PKG" ]; then
  die 3 "not a Jetson: no L4T release found (${RELEASE_FILE} and the nvidia-l4t-core package" \
    "are both absent). setup.sh is for Jetson devices flashed with JetPack 5.1 or 6.x; on a PC" \
    "install with \`pip install 'wbc-edge[runtime]'\` instead."
fi
L4T="${L4T_PKG:-$L4T_FILE}"
if [ -n "$L4T_FILE" ] && [ -n "$L4T_PKG" ] && [ "${L4T_FILE%.*}" != "${L4T_PKG%.*}" ]; then
  warn "release file says L4T R$L4T_FILE but nvidia-l4t-core is $L4T_PKG (an unfinished" \
    "upgrade?); using the package's R$L4T_PKG"
fi

IFS=. read -r L4T_MAJOR L4T_MINOR L4T_PATCH <<<"$L4T"

# --- 2. What that release ships ------------------------------------------------------------------
# JetPack 5.1.x: R35.2-35.6. JetPack 6.0: R36.2 (developer preview) and R36.3. JetPack 6.1/6.2:
# R36.4.x. Anything else is untested and refused rather than half-installed.
SUPPORTED="supported: JetPack 5.1.x (L4T R35.2-R35.6, TensorRT 8.5, CPU-only), JetPack 6.0"
SUPPORTED+=" (R36.2/R36.3, TensorRT 8.6), JetPack 6.1/6.2 (R36.4, TensorRT 10.3)"
case "$L4T_MAJOR.$L4T_MINOR" in
  35.2 | 35.3 | 35.4 | 35.5 | 35.6)
    # R35.2 = 5.1, R35.3 = 5.1.1, R35.4 = 5.1.2, R35.5 = 5.1.3, R35.6.0 = 5.1.4,
    # R35.6.1 and R35.6.2 = 5.1.5
    JETPACK="5.1"
    [ "$L4T_MINOR" -eq 2 ] || JETPACK="5.1.$((L4T_MINOR - 2))"
    if [ "$L4T_MINOR" -eq 6 ] && [ "$L4T_PATCH" -ge 1 ]; then JETPACK="5.1.5"; fi
    TRT="8.5"
    CUDA="11.4"
    SYS_PY="3.8"
    ;;
  36.2)
    JETPACK="6.0 DP"
    TRT="8.6"
    CUDA="12.2"
    SYS_PY="3.10"
    ;;
  36.3)
    JETPACK="6.0"
    TRT="8.6"
    CUDA="12.2"
    SYS_PY="3.10"
    ;;
  36.4)
    # R36.4.0 = 6.1, R36.4.2 = 6.1.1, R36.4.3 = 6.2, R36.4.4 and R36.4.7 = 6.2.1
    case "$L4T_PATCH" in
      0 | 1) JETPACK="6.1" ;;
      2) JETPACK="6.1.1" ;;
      3) JETPACK="6.2" ;;
      4 | 7) JETPACK="6.2.1" ;;
      *) JETPACK="6.2.x" ;;
    esac
    TRT="10.3"
    CUDA="12.6"
    SYS_PY="3.10"
    ;;
  *)
    die 4 "L4T R$L4T is not supported ($SUPPORTED). Flash JetPack 6.2 (Orin) or 5.1.x" \
      "(Xavier) with NVIDIA SDK Manager, or run wbc-edge in a container of a supported release."
    ;;
esac
say "Jetson: L4T R$L4T = JetPack $JETPACK (TensorRT $TRT, CUDA $CUDA, Python $SYS_PY)"

if [ "$L4T_MAJOR" = 35 ] && [ "$CPU_ONLY" -eq 0 ]; then
  die 4 "JetPack $JETPACK ships Python 3.8 and TensorRT $TRT bindings built for 3.8 only;" \
    "wbc-edge needs Python >= 3.10, and a 3.10 venv cannot load those bindings. On Orin, flash" \
    "JetPack 6.x (TensorRT 8.6/10.3, Python 3.10). On Xavier (JetPack 5 is its last release)," \
    "rerun with --cpu-only for ONNX Runtime on the CPU (needs python3.10), or see" \
    "jetson/README.md 'JetPack 5' for building the TensorRT bindings for Python 3.10."
fi

if [ "$CPU_ONLY" -eq 1 ]; then
  EXTRAS="runtime"
  PY_WANT="3.10"
  [ -n "$PYTHON" ] || PYTHON="python3.10"
else
  EXTRAS="runtime,jetson"
  PY_WANT="$SYS_PY"
  # JetPack's TensorRT bindings live in the system interpreter's dist-packages.
  [ -n "$PYTHON" ] || PYTHON="/usr/bin/python3"
fi
plan="venv $VENV from $PYTHON (Python $PY_WANT), wbc-edge[$EXTRAS]"
[ "$SERVICE" -eq 0 ] || plan+=", systemd service"
say "plan: $plan"

if [ "$DRY_RUN" -eq 0 ] && [ "$(id -u)" -ne 0 ]; then
  die 2 "installing needs root: rerun as \`sudo $0\` (or add --dry-run to see the steps)"
fi

# --- 3. System packages --------------------------------------------------------------------------
# nvidia-jetpack brings CUDA (nvcc and headers for pycuda), TensorRT with its Python bindings,
# cuDNN and JetPack's OpenCV (built with GStreamer, which csi:// cameras need). On a JetPack
# image that already has them apt changes nothing.
APT_PACKAGES=(python3-venv python3-dev python3-pip build-essential v4l-utils)
[ "$CPU_ONLY" -eq 1 ] || APT_PACKAGES+=(nvidia-jetpack)
run apt-get update
run env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
  "${APT_PACKAGES[@]}"

# --- 4. The interpreter --------------------------------------------------------------------------
if [ "$DRY_RUN" -eq 1 ]; then
  say "+ check: $PYTHON is Python $PY_WANT"
else
  command -v "$PYTHON" >/dev/null 2>&1 || die 5 "$PYTHON not found: install Python $PY_WANT" \
    "(JetPack 5: e.g. the deadsnakes PPA's python3.10 and python3.10-venv) and rerun"
  have_py="$("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
  [ "$have_py" = "$PY_WANT" ] || die 5 "$PYTHON is Python $have_py; this release needs" \
    "$PY_WANT (JetPack's TensorRT bindings are built for it). Set WBC_EDGE_PYTHON to one."
fi

# --- 5. The venv ---------------------------------------------------------------------------------
# --system-site-packages lets the venv import JetPack's tensorrt (and OpenCV) from dist-packages.
if [ -x "$VENV/bin/python" ]; then
  if ! grep -qi '^include-system-site-packages *= *true' "$VENV/pyvenv.cfg" 2>/dev/null; then
    die 5 "$VENV exists without --system-site-packages, so it cannot see JetPack's TensorRT:" \
      "remove it (sudo rm -r $VENV) or pick another folder with --venv, then rerun"
  fi
  say "venv $VENV exists; reusing it"
else
  run mkdir -p "$(dirname "$VENV")"
  run "$PYTHON" -m venv --system-site-packages "$VENV"
fi

# --- 6. wbc-edge ---------------------------------------------------------------------------------
# numpy < 2: JetPack's TensorRT and OpenCV bindings are compiled against numpy 1.x and refuse to
# load beside numpy 2. pycuda compiles here, so it needs the device's CUDA on PATH and CUDA_ROOT.
PIP=("$VENV/bin/python" -m pip)
run "${PIP[@]}" install --upgrade pip
if [ "$CPU_ONLY" -eq 1 ]; then
  : # no pycuda to build
elif [ "$DRY_RUN" -eq 1 ]; then
  say "+ export CUDA_ROOT=$CUDA_HOME_DIR PATH=$CUDA_HOME_DIR/bin:\$PATH"
else
  export CUDA_ROOT="$CUDA_HOME_DIR" PATH="$CUDA_HOME_DIR/bin:$PATH"
fi
run "${PIP[@]}" install "numpy<2" "${REPO_DIR}[${EXTRAS}]"
# Reinstall the package itself (not its dependencies) so a rerun after `git pull` takes the new code.
run "${PIP[@]}" install --no-deps --force-reinstall "$REPO_DIR"

# pip's opencv-python-headless has no GStreamer, so it cannot open csi:// cameras. When the
# system OpenCV (JetPack's) has it, drop the wheel so the venv falls through to it.
GST_CHECK='import cv2, re, sys; sys.exit(not re.search(r"GStreamer:\s+YES", cv2.getBuildInformation()))'
if [ "$DRY_RUN" -eq 1 ]; then
  say "+ check: if $PYTHON's OpenCV has GStreamer, pip uninstall opencv-python-headless from the venv"
elif [ "$CPU_ONLY" -eq 0 ] && "$PYTHON" -c "$GST_CHECK" 2>/dev/null; then
  "${PIP[@]}" uninstall -y opencv-python-headless >/dev/null 2>&1 || true
  say "using JetPack's OpenCV (with GStreamer, for csi:// cameras)"
else
  warn "no OpenCV with GStreamer found: USB (v4l2://) cameras and folders work, csi:// does not"
fi

# --- 7. Check every import -----------------------------------------------------------------------
CHECK_PY='
import importlib, sys
trt_want, cpu_only = sys.argv[1], sys.argv[2] == "1"
mods = ["numpy", "cv2", "onnxruntime", "wbc_edge", "wbc_edge.runtime", "wbc_edge.model.card"]
if not cpu_only:
    mods += ["onnx", "tensorrt", "pycuda.driver"]  # onnx: build-engine reads the graph
bad = []
for name in mods:
    try:
        version = getattr(importlib.import_module(name), "__version__", "")
        print(f"  ok   {name} {version}")
    except Exception as exc:
        bad.append(name)
        print(f"  FAIL {name}: {exc}")
if "torch" in sys.modules:
    bad.append("torch")
    print("  FAIL the runtime imported torch; it must not")
if not cpu_only and "tensorrt" not in bad:
    import tensorrt
    if not tensorrt.__version__.startswith(trt_want + "."):
        bad.append("tensorrt")
        print(f"  FAIL tensorrt {tensorrt.__version__}, expected {trt_want}.x for this JetPack")
if not cpu_only and "pycuda.driver" not in bad:
    import pycuda.driver as cuda
    try:
        cuda.init()
        print(f"  ok   GPU {cuda.Device(0).name()}")
    except Exception as exc:
        bad.append("GPU")
        print(f"  FAIL CUDA cannot reach the GPU: {exc}")
sys.exit(1 if bad else 0)
'
if [ "$DRY_RUN" -eq 1 ]; then
  say "+ check: import numpy cv2 onnxruntime wbc_edge.runtime$([ "$CPU_ONLY" -eq 1 ] ||
    printf ' onnx tensorrt (%s.x) pycuda.driver + GPU' "$TRT") (and no torch)"
  run "$VENV/bin/wbc-edge" --help
else
  say "checking imports in $VENV:"
  "$VENV/bin/python" -c "$CHECK_PY" "$TRT" "$CPU_ONLY" ||
    die 5 "an import check failed (above); fix it and rerun setup.sh (it is safe to rerun)"
  "$VENV/bin/wbc-edge" --help >/dev/null || die 5 "$VENV/bin/wbc-edge --help failed"
fi

# --- 8. Optional: the systemd service ------------------------------------------------------------
# Every folder the unit and the env file name is made here, owned by the service user and its
# group: the lab user joins that group to drop images (incoming) and engines (models) and to
# read results (the unit's UMask=0027 leaves them group-readable). The setgid bit keeps files
# that others put there in the group.
env_value() { sed -n "s/^$1=//p" "$2" | tail -n 1; }

if [ "$SERVICE" -eq 1 ]; then
  if id -u "$SERVICE_USER" >/dev/null 2>&1; then
    say "user $SERVICE_USER exists"
  else
    groups="video"
    if getent group render >/dev/null 2>&1; then groups="video,render"; fi
    run useradd --system --user-group --home-dir "$STATE_DIR" --shell /usr/sbin/nologin \
      --groups "$groups" "$SERVICE_USER"
  fi
  unit_src="$REPO_DIR/jetson/wbc-edge.service"
  unit_dst="/etc/systemd/system/wbc-edge.service"
  if [ "$DRY_RUN" -eq 1 ]; then
    say "+ sed 's#/opt/wbc-edge/venv#$VENV#g' $unit_src > $unit_dst"
  else
    sed "s#/opt/wbc-edge/venv#$VENV#g" "$unit_src" >"$unit_dst"
    chmod 0644 "$unit_dst"
  fi
  run install -d -m 0755 /etc/wbc-edge
  env_file="$REPO_DIR/jetson/wbc-edge.env.example"
  if [ -e "$ENV_DST" ]; then
    say "$ENV_DST exists; leaving your settings alone"
    env_file="$ENV_DST"
  else
    run install -m 0644 "$env_file" "$ENV_DST"
  fi

  # The folders, read from the env file the service will use.
  model="$(env_value WBC_EDGE_MODEL "$env_file")"
  source_uri="$(env_value WBC_EDGE_SOURCE "$env_file")"
  run_args="$(env_value WBC_EDGE_ARGS "$env_file")"
  out_re='--out[= ]([^ ]+)'
  results=""
  if [[ "$run_args" =~ $out_re ]]; then results="${BASH_REMATCH[1]}"; fi
  [ -n "$results" ] || die 5 "$env_file: WBC_EDGE_ARGS has no --out FOLDER for the results"
  case "$results" in /*) ;; *) results="$STATE_DIR/$results" ;; esac
  folders=("0750 $STATE_DIR" "2770 $(dirname "$model")" "2750 $results")
  case "$source_uri" in
    /dev/*) ;;                               # a camera node, not a folder
    /*) folders+=("2770 ${source_uri%/}") ;; # a watched folder
  esac
  for entry in "${folders[@]}"; do
    run install -d -o "$SERVICE_USER" -g "$SERVICE_USER" -m "${entry%% *}" "${entry#* }"
  done
  if [ -n "$LAB_USER" ] && [ "$LAB_USER" != root ]; then
    run usermod -a -G "$SERVICE_USER" "$LAB_USER"
    say "lab user $LAB_USER is in group $SERVICE_USER (log out and in again for it to apply)"
  else
    warn "no lab user (run with sudo from your account, or pass --lab-user NAME): only root" \
      "can read the results until someone is added with: sudo usermod -a -G $SERVICE_USER NAME"
  fi
  run systemctl daemon-reload
fi

# --- 9. Next steps -------------------------------------------------------------------------------
engine="student.int8.engine"
[ "$SERVICE" -eq 0 ] || engine="$model" # where the service's env file expects it
done_word="is set up"
[ "$DRY_RUN" -eq 0 ] || done_word="would be set up (dry run: nothing was changed)"
cat <<EOF

wbc-edge $done_word for JetPack $JETPACK in $VENV. Next:
  1. Copy the student's ONNX (and its INT8 Q/DQ ONNX) onto the device.
EOF
if [ "$CPU_ONLY" -eq 1 ]; then
  cat <<EOF
  2. Run it on the CPU (no TensorRT in this set-up):
       $VENV/bin/wbc-edge run v4l2:///dev/video0 --model student.int8.onnx
EOF
else
  cat <<EOF
  2. Build the engine here (engines are tied to this GPU and TensorRT $TRT):
       $VENV/bin/wbc-edge build-engine --model student.int8.onnx --out $engine
  3. Max the clocks for stable numbers, then run and measure:
       sudo nvpmodel -q; sudo jetson_clocks
       $VENV/bin/wbc-edge run csi://0 --model $engine --smear
       $VENV/bin/wbc-edge bench --model $engine --teacher teacher.onnx
EOF
fi
if [ "$SERVICE" -eq 1 ]; then
  cat <<EOF
  Service: check $ENV_DST (model, source, options), then
       sudo systemctl enable --now wbc-edge && journalctl -u wbc-edge -f
EOF
fi
say "See jetson/README.md for cameras, power modes and the container."
