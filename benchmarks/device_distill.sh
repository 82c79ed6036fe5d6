#!/usr/bin/env bash
# Issue 25's device check: the teacher, its 1/2/4-step students and a same-size AmusedPipeline at batch 1 and
# 256 on one GPU (bf16, and bf16 with torch.compile/CUDA graphs), JSON + markdown under $OUT. See
# benchmarks/device_distill.py for what is measured.
#
#   bash benchmarks/device_distill.sh prepare    # HERE, once: what the device image lacks, into ignored folders
#       .whl/            diffusers + importlib_metadata wheels (the image has no diffusers)
#       .device_carry/   MiniLM's config.json and tokenizer.json (its 87 MB package is too big to carry; the
#                        device builds a MiniLM of the same shape with random weights: speed does not depend on them)
#   device run: command "bash benchmarks/device_distill.sh", carry [".whl", ".device_carry"], timeout_s 540
#       (budget: ~1-2 min start, ~5 min for the run; a cut-short run leaves device_distill.partial.json in $OUT)
#   bash benchmarks/device_distill.sh dry-run    # the same script on this CPU with tiny models (OUT=/tmp/... here)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}

case "${1:-device}" in
  prepare)
    grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
    grep -qx '/.device_carry/' .git/info/exclude 2>/dev/null || echo '/.device_carry/' >> .git/info/exclude
    $PY -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform any --platform manylinux2014_x86_64 -d .whl "diffusers==0.42.1" "importlib_metadata"
    mkdir -p .device_carry/minilm
    src=$($PY -c "from pixlm.text.encoder import minilm_path; print(minilm_path())")
    cp "$src/config.json" "$src/tokenizer.json" .device_carry/minilm/
    du -sh .whl .device_carry
    ;;
  dry-run)
    $PY benchmarks/device_distill.py --dry-run --out "${OUT:-/tmp/device_distill}"
    ;;
  device)
    : "${OUT:?OUT must name the folder for the results}"
    $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
    export PYTHONPATH="/tmp/site:$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
    nvidia-smi > "$OUT/nvidia-smi.txt" 2>&1 || true
    $PY benchmarks/device_distill.py --device cuda --threads 8 --minilm-files .device_carry/minilm \
        --batches 1,256 --repeats 30 --throughput-repeats 5 --out "$OUT" 2>&1 | tee "$OUT/device_distill.log"
    ;;
  *)
    echo "usage: $0 [prepare|dry-run|device]" >&2
    exit 2
    ;;
esac
