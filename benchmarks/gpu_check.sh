#!/usr/bin/env bash
# The one prepared script for a lent GPU machine (the device tool): CUDA tests, then the benchmarks,
# each under its own timeout, every log in $OUT. It needs python3 with torch, torchvision, pytest,
# pyyaml, pandas, matplotlib and scikit-learn (no DVC, no network). Run from the repository root:
#   bash benchmarks/gpu_check.sh            (OUT defaults to ./gpu-out)
set -u
OUT=${OUT:-gpu-out}
mkdir -p "$OUT"
export PYTHONDONTWRITEBYTECODE=1
step() {  # step NAME SECONDS COMMAND...: run, log, keep going on failure
  local name=$1 limit=$2; shift 2
  echo "=== $name ($(date +%T))" | tee -a "$OUT/summary.txt"
  timeout "$limit" "$@" > "$OUT/$name.log" 2>&1
  echo "exit $? after $SECONDS s" | tee -a "$OUT/summary.txt"
}
nvidia-smi > "$OUT/nvidia-smi.txt" 2>&1
python3 -c "import torch; print(torch.__version__, torch.cuda.get_device_name())" > "$OUT/torch.txt" 2>&1
step cuda-tests 240 python3 -m pytest -q -p no:cacheprovider -m gpu tests/test_step.py tests/test_train.py
step step-tests 120 python3 -m pytest -q -p no:cacheprovider tests/test_step.py tests/tricks/test_variants.py -x
step bench-train 300 python3 -m benchmarks.bench_train --batch-sizes 128 512 --epochs 2 --project
step bench-share 180 python3 -m benchmarks.bench_share --shares 1 2 4 --epochs 2
step stage-times 240 python3 -m benchmarks.stage_times
echo "=== done ($(date +%T))" | tee -a "$OUT/summary.txt"
