#!/usr/bin/env bash
# Does the training loop run as fast as the bare train step?  On one GPU, bfloat16 compute,
# synthetic in-memory data: the benchmark's train step (no data, no logging) for a model,
# then `python -m jaxvision.train` on the same model and batch with on-device augmentation,
# metrics, evaluation and checkpoints, whose logged img/s is compared with the first.
#
#   bash experiments/gpu_train_check.sh OUTDIR
#
# Environment: PYTHON (default python3), PER_RUN_TIMEOUT (seconds, default 200),
# MODELS (default "wrn28_10 resnet50"), TRAIN_ARGS (extra --config.* flags for every run),
# WORKROOT (where the runs' workdirs go, default OUTDIR), PROFILE=1 to trace 3 benchmark
# steps and 25 training steps (4 for test_wrn) too and print experiments/trace_summary.py's sums of both.
set -u
out=${1:-gpu_train}
mkdir -p "$out"
py=${PYTHON:-python3}
export PYTHONUNBUFFERED=1
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
to=${PER_RUN_TIMEOUT:-200}

for m in ${MODELS:-wrn28_10 resnet50}; do
  case $m in
    wrn28_10) cfg=experiments/configs/wrn28_10_cifar.py; model=wrn28_10; b=128; r=32; n=25600; ep=2; pw=100,125 ;;
    resnet50) cfg=experiments/configs/resnet50_imagenet.py; model=resnet50; b=256; r=224; n=15360; ep=1; pw=30,55 ;;
    test_wrn) cfg=experiments/configs/wrn28_10_cifar.py; model=test_wrn; b=16; r=32; n=256; ep=2; pw=4,8 ;;
    *) echo "unknown model $m"; exit 2 ;;
  esac
  echo "=== $m: benchmark step"
  timeout "$to" "$py" -m jaxvision.benchmark --models "$model" --batch-sizes $b \
    --resolutions $r --dtypes bfloat16 --modes train --steps 20 --warmup 5 \
    --out "$out/${m}_bench.csv" ${PROFILE:+--profile "${WORKROOT:-$out}/${m}_bench_profile"}
  echo "=== $m: benchmark exit status $?"
  echo "=== $m: training loop"
  timeout "$to" "$py" -m jaxvision.train --config "$cfg" --workdir "${WORKROOT:-$out}/${m}_run" \
    --config.model="$model" --config.dataset.source=synthetic --config.dataset.train_size=$n \
    --config.batch_size=$b --config.num_epochs=$ep --config.dtype=bfloat16 \
    --config.log_every_steps=25 ${PROFILE:+--config.profile_steps="($pw)"} \
    ${TRAIN_ARGS:-} 2>&1 | tee "$out/${m}_train.log"
  echo "=== $m: training exit status ${PIPESTATUS[0]}"
  if [ -n "${PROFILE:-}" ]; then
    "$py" experiments/trace_summary.py "${WORKROOT:-$out}/${m}_bench_profile" --steps 3
    "$py" experiments/trace_summary.py "${WORKROOT:-$out}/${m}_run/profile" --steps $((${pw#*,} - ${pw%,*}))
  fi
done
