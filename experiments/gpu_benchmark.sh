#!/usr/bin/env bash
# GPU benchmark of ResNet-50, ViT-B/16, ConvNeXt-T (224x224) and WRN-28-10 (32x32) against
# timm/PyTorch in the same process, bfloat16 compute with float32 weights; then the
# numerical checks in experiments/gpu_checks.py, and ViT-B/16 once more with XLA's unfused
# attention.  One process per run, so that one failure or timeout does not lose the others.
#
#   bash experiments/gpu_benchmark.sh OUTDIR      # OUTDIR gets one CSV per run and a log
#
# Environment: PYTHON (default python3), STEPS (timed steps, default 20), WARMUP (default 5),
# PER_RUN_TIMEOUT (seconds, default 170), SKIP_CHECKS=1 to go straight to the timings.
set -u
out=${1:-gpu_bench}
mkdir -p "$out"
py=${PYTHON:-python3}
export PYTHONUNBUFFERED=1
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"  # run from the repository root

bench() {  # bench TAG ARGS...
  local tag=$1; shift
  echo "=== $tag: $*"
  timeout "${PER_RUN_TIMEOUT:-170}" "$py" -m jaxvision.benchmark --dtypes bfloat16 \
    --compare torch --steps "${STEPS:-20}" --warmup "${WARMUP:-5}" --out "$out/$tag.csv" "$@"
  echo "=== $tag exit status $?"
}

bench resnet50 --models resnet50 --batch-sizes 256 --resolutions 224
bench vit_b16 --models vit_base_patch16_224 --batch-sizes 256 --resolutions 224
bench convnext_t --models convnext_tiny --batch-sizes 256 --resolutions 224
bench wrn28_10 --models wrn28_10 --batch-sizes 128 --resolutions 32
if [ "${SKIP_CHECKS:-0}" != 1 ]; then
  timeout "${PER_RUN_TIMEOUT:-170}" "$py" experiments/gpu_checks.py
  echo "gpu_checks exit status $?"
fi
# ViT-B/16 once more with XLA's own (unfused) attention: what the fused kernel is worth.
JAXVISION_ATTENTION_IMPL=xla bench vit_b16_xla_attention --models vit_base_patch16_224 \
  --batch-sizes 256 --resolutions 224 --modes train
