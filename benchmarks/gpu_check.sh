#!/usr/bin/env bash
# The one prepared script for a lent GPU machine (the device tool), meant to end within 9 minutes:
# CUDA tests, op counts and benchmarks, then an evidence phase, a real table on the full
# Fashion-MNIST (presets fashion + fashion-gpu) with as many epochs as the time left allows. Every
# log, the table and its CSV go to $OUT. On a machine without CUDA the GPU parts are skipped and the
# CPU tests of the captured step run instead, so the script can be checked anywhere.
#
# Needs python3 with torch, pytest, pyyaml, pandas, matplotlib, scikit-learn. DVC (for the table)
# is installed from ./wheelhouse when it is missing (`make wheelhouse WHEEL_PYTHON=3.12
# WHEEL_EXCLUDE="torch torchvision numpy pandas matplotlib scikit-learn PyYAML pytest ruff"`, 29 MB),
# and the Fashion-MNIST .gz files are read from data/raw (or Debian's /usr/share/datasets/fashion-mnist).
#   bash benchmarks/gpu_check.sh            (OUT defaults to ./gpu-out, BUDGET_S to 540 seconds)
set -u
OUT=${OUT:-gpu-out}
BUDGET_S=${BUDGET_S:-540}
mkdir -p "$OUT"
export PYTHONDONTWRITEBYTECODE=1 DVC_NO_ANALYTICS=1
PY=python3
step() {  # step NAME SECONDS COMMAND...: run, log, keep going on failure
  local name=$1 limit=$2; shift 2
  echo "=== $name ($(date +%T), ${SECONDS}s in)" | tee -a "$OUT/summary.txt"
  timeout "$limit" "$@" > "$OUT/$name.log" 2>&1
  local rc=$?
  echo "exit $rc after $SECONDS s: $(tail -n 1 "$OUT/$name.log")" | tee -a "$OUT/summary.txt"
  return $rc
}
nvidia-smi > "$OUT/nvidia-smi.txt" 2>&1
$PY -c "import torch; print(torch.__version__, torch.cuda.get_device_name() if torch.cuda.is_available() else 'no CUDA')" \
  | tee "$OUT/torch.txt"
CUDA=$($PY -c "import torch; print(int(torch.cuda.is_available()))")

if ! $PY -c "import dvc" 2>/dev/null && [ -f wheelhouse/requirements.txt ]; then
  step wheelhouse 120 bash -c "$PY -m venv --system-site-packages .gpu-venv && \
    .gpu-venv/bin/python -m pip install --no-index --find-links wheelhouse -r wheelhouse/requirements.txt" \
    && PY=$PWD/.gpu-venv/bin/python && export PATH="$PWD/.gpu-venv/bin:$PATH"
fi

step step-ops 60 $PY -m benchmarks.step_ops
if [ "$CUDA" != 1 ]; then
  echo "no CUDA: the GPU parts are skipped" | tee -a "$OUT/summary.txt"
  step cpu-step-tests 300 $PY -m pytest -q -p no:cacheprovider tests/test_step.py tests/test_capture.py
  echo "=== done ($(date +%T), ${SECONDS}s)" | tee -a "$OUT/summary.txt"
  exit 0
fi
step cuda-tests 150 $PY -m pytest -q -p no:cacheprovider -m gpu tests/test_step.py tests/test_train.py
step bench-train 150 $PY -m benchmarks.bench_train --batch-sizes 128 512 --epochs 2 --project

# The evidence: what is left of the budget, less a minute for the table itself, sizes the epochs.
if ! $PY -c "import dvc" 2>/dev/null; then
  echo "no DVC (and no wheelhouse/): the Fashion-MNIST table is skipped" | tee -a "$OUT/summary.txt"
elif ! ls data/raw/train-images-idx3-ubyte.gz /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz \
    >/dev/null 2>&1; then
  echo "no Fashion-MNIST in data/raw: the table is skipped" | tee -a "$OUT/summary.txt"
else
  [ -d .git ] || { git init -q && git -c user.name=gpu -c user.email=gpu@tost.local add -A \
    && git -c user.name=gpu -c user.email=gpu@tost.local commit -qm "gpu check snapshot"; }
  [ -d .dvc ] || dvc init -q
  left=$((BUDGET_S - SECONDS - 60))
  if step evidence-size 90 $PY -m benchmarks.gpu_evidence --budget "$((left - 60))" --preset-out "$OUT/epochs.yaml"; then
    cat "$OUT/evidence-size.log" | tee -a "$OUT/summary.txt"
    step fashion-gpu-table $((left - 30)) $PY -m sweep --preset fashion --preset fashion-gpu \
      --preset "$OUT/epochs.yaml" --out "$OUT/table-fashion-gpu" --poll 5
  fi
fi
echo "=== done ($(date +%T), ${SECONDS}s)" | tee -a "$OUT/summary.txt"
