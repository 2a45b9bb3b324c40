#!/usr/bin/env bash
# Fetch what the tests read but must not fetch themselves (nothing is downloaded during a test
# run): PP-OCR's ONNX models, inside the PyPI wheel rapidocr-onnxruntime 1.4.4, for
# tests/test_conversions.py. Into $INFERBENCH_TEST_WHEELS (default
# ~/.cache/pytest-inferbench-tests/wheels); export the same variable when running pytest if you
# change it. Run once where PyPI is reachable; a wheel already there is kept. .ci/run calls it.
set -euo pipefail
WHEELS="${INFERBENCH_TEST_WHEELS:-$HOME/.cache/pytest-inferbench-tests/wheels}"
PYTHON="${PYTHON:-python3}"          # any python with pip
mkdir -p "$WHEELS"
if ! ls "$WHEELS"/rapidocr_onnxruntime-1.4.4-*.whl >/dev/null 2>&1; then
  # --no-deps: only the ONNX files inside are read, none of its dependencies are needed
  "$PYTHON" -m pip download -q --no-deps rapidocr-onnxruntime==1.4.4 -d "$WHEELS"
fi
ls "$WHEELS"/rapidocr_onnxruntime-1.4.4-*.whl
