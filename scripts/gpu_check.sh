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
echo "== device time (busy share = probed device ms x queries / window; NVML util beside it)"
python3 - "$OUT/gpu_run.json" <<'PY' 2>&1 | tee "$OUT/device_time.log"
import json, sys
try:
    results = json.load(open(sys.argv[1]))["results"]
except (OSError, ValueError, KeyError) as exc:
    sys.exit(f"no run file to read: {exc}")
def f(x, scale=1.0, fmt=".3g"):
    return "-" if x is None else format(x * scale, fmt)
print(f"{'cell':56} {'p50 ms':>8} {'span ms':>8} {'dev ms':>8} {'busy%':>6} {'nvml%':>6}  note")
for r in results:
    d = r.get("device_time")
    if not d or r.get("status") != "passed":
        continue
    name = (r["id"].partition("::")[2] or r["id"])[:56]
    if not d.get("available"):
        print(f"{name:56} device time unavailable: {d.get('reason', '')[:80]}")
        continue
    p50 = (r["latency_ms"].get("percentiles") or {}).get("p50", {}).get("value")
    util = ((r.get("gpu") or {}).get("utilization_pct") or {}).get("mean")
    note = "launch-bound" if d.get("launch_bound") else ""
    if r["runtime"].get("cuda_graphs"):
        note += f" graph capture {f(r['runtime'].get('capture_s'))}s"
    if d.get("device_ms") is None:
        note += f" no device ms: {d.get('device_reason', '')[:60]}"
    print(f"{name:56} {f(p50):>8} {f((d.get('span_ms') or {}).get('mean')):>8} "
          f"{f((d.get('device_ms') or {}).get('mean')):>8} {f(d.get('busy_share'), 100, '.0f'):>6} "
          f"{f(util, 1, '.0f'):>6}  {note.strip()} ({d['sampled']} sampled)")
PY
