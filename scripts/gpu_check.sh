#!/usr/bin/env bash
# GPU check, for a machine with an NVIDIA GPU and its own PyTorch (no network needed):
#   bash scripts/gpu_check.sh
# Installs this package without dependencies (wheels in .whl/ first, if present: pydantic is
# the one a stock PyTorch image lacks), runs the test suite (GPU tests included) and the GPU
# job, and prints the job's summary table. Logs and the run file land in $OUT (default /tmp).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/gpu_check}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
if compgen -G ".whl/*.whl" >/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site
fi
python3 -m pip install -q --no-index --no-deps --no-build-isolation -e . \
  || { echo "editable install failed"; exit 1; }
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv || true
python3 -c "import torch, onnxruntime; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), '| onnxruntime', onnxruntime.__version__, onnxruntime.get_available_providers())"
echo "== test suite (GPU tests included)"
python3 -m pytest tests -q -p no:cacheprovider -n 4 -rs 2>&1 | tee "$OUT/tests.log" | tail -8
echo "== GPU job"
timeout "${JOB_TIMEOUT:-330}" python3 -m pytest suites/gpu.yaml --infer-config suites/gpu.yaml \
  -p no:cacheprovider -rs --infer-json "$OUT/gpu_run.json" 2>&1 | tee "$OUT/gpu_job.log" \
  | sed -n '/= inferbench =/,$p'
