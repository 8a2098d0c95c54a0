#!/usr/bin/env bash
# The README's Aff-Wild2 pipeline, step by step with the time of each, on built-in SynthFACS data
# instead of Aff-Wild2 (same commands; build-dataset reads the SynthFACS manifest):
#
#   VISION_WEIGHTS=vit_b16.safetensors TEXT=/models/bert-base-uncased DEVICE=cuda bash benchmarks/pipeline.sh OUT
#
# VISION_WEIGHTS: a timm vit_base_patch16_224 state dict (the paper's ViT-B/16); TEXT: a
# transformers BERT folder (the paper's BERT-base). Random-initialised weights of those shapes
# measure the same cost. N (default 1600) SynthFACS images at 224 px; EPOCHS (default 2) for each
# training step; LANDMARKS (default manifest; canonical where dlib's landmark model is absent,
# prediction then uses the same template); VISION (default vit_base_patch16_224: the timm name
# VISION_WEIGHTS are for; the tests run the script with a tiny ViT on the CPU).
set -euo pipefail
OUT=${1:?usage: benchmarks/pipeline.sh OUT}
N=${N:-1600} EPOCHS=${EPOCHS:-2} DEVICE=${DEVICE:-cuda} PRESET=${PRESET:-paper} LANDMARKS=${LANDMARKS:-manifest}
VISION=(--vision "${VISION:-vit_base_patch16_224}" --vision-weights "${VISION_WEIGHTS:?set VISION_WEIGHTS}")
TEXT=(--text "${TEXT:?set TEXT}")
mkdir -p "$OUT"
step() {  # step NAME COMMAND...: run, and print the seconds it took
  local name=$1; shift
  local t0; t0=$(date +%s%N)
  echo "\$ $*"
  "$@" 2>&1 | grep -v "it/s\]$" | tail -4
  local ms=$(( ($(date +%s%N) - t0) / 1000000 ))
  printf 'step %-16s %4d.%d s\n' "$name" $((ms / 1000)) $((ms % 1000 / 100)) | tee -a "$OUT/times.txt"
}
: > "$OUT/times.txt"
step synth mf2 synth --n "$N" --size 224 --seed 0 --out "$OUT/synthfacs" --no-baseline
step build-dataset mf2 build-dataset --manifest "$OUT/synthfacs/manifest.jsonl" --out "$OUT/mfa"
step caption mf2 caption --manifest "$OUT/mfa/manifest.jsonl"
step extract-features mf2 extract-features --manifest "$OUT/mfa/manifest.captioned.jsonl" --out "$OUT/mfa/features.zarr" \
  "${VISION[@]}" "${TEXT[@]}" --landmarks "$LANDMARKS" --device "$DEVICE" --batch-size 64
step pretrain mf2 pretrain --cache "$OUT/mfa/features.zarr" --out "$OUT/mf2" --preset "$PRESET" --epochs "$EPOCHS" \
  --device "$DEVICE"
step finetune-dfn mf2 finetune --dfn --from "$OUT/mf2" --cache "$OUT/mfa/features.zarr" --out "$OUT/mf2-dfn" \
  --epochs "$EPOCHS" --device "$DEVICE"
step finetune-full mf2 finetune --full --from "$OUT/mf2" --cache "$OUT/mfa/features.zarr" --out "$OUT/mf2-full" \
  --epochs 1 --device "$DEVICE"
step evaluate mf2 evaluate --checkpoint "$OUT/mf2-dfn" --cache "$OUT/mfa/features.zarr" --beside "$OUT/mf2" \
  --device "$DEVICE"
step predict mf2 predict --checkpoint "$OUT/mf2-dfn" "$OUT"/synthfacs/images/synth00000[0-7].png --face aligned \
  --explain --device "$DEVICE" "${VISION[@]:2}" --out "$OUT/faces.csv"
cat "$OUT/times.txt"
