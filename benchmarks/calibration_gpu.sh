#!/usr/bin/env bash
# The calibration study on ONNX Runtime's CUDA provider, to separate the quantization itself
# from CPU kernel effects (the CUDA provider computes the Q/DQ graph without the CPU's fused INT8 kernels).
# NOT RUN YET: no GPU was lent when it was written. Needs onnxruntime-gpu matching the machine's CUDA:
#   pip install onnxruntime-gpu      (offline machine: put the wheel in .whl/ and carry it)
# RUN=runs/NAME reuses a finished synthetic run (carry it); otherwise the study trains its own model.
# Results: benchmarks/results/calibration_study_cuda.{json,md,png}, copied to $OUT when set.
set -euo pipefail
if ls .whl/onnxruntime_gpu*.whl >/dev/null 2>&1; then
  ${PY:-python3} -m pip install -q --no-index --no-deps --target /tmp/ort-gpu .whl/onnxruntime_gpu*.whl
  export PYTHONPATH="/tmp/ort-gpu:${PYTHONPATH:-}"
fi
export PYTHONPATH=".:${PYTHONPATH:-}" PWDEPLOY_NO_PROGRESS=1 PYTHONUNBUFFERED=1
${PY:-python3} -c "import onnxruntime as o, sys; p = o.get_available_providers(); print('onnxruntime', o.__version__, p); \
sys.exit(0 if 'CUDAExecutionProvider' in p else 'no CUDAExecutionProvider: install onnxruntime-gpu')"
${PY:-python3} benchmarks/calibration_study.py ${RUN:+--run "$RUN"} ${QUICK:+--quick} --ort-provider cuda \
  --out-name calibration_study_cuda
if [ -n "${OUT:-}" ]; then mkdir -p "$OUT" && cp benchmarks/results/calibration_study_cuda.* "$OUT"/; fi
