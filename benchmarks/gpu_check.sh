#!/usr/bin/env bash
# One-shot check of the CUDA paths on a lent GPU machine (see README "GPU"): it needs no pip install of
# pwdeploy, only torch + onnx + onnxruntime on the machine and wheels for torch-pruning/onnxconverter-common
# in .whl/ (carried). Results go to $OUT (or ./gpu-out): logs, JSON and the fairness grid as a tarball.
set -u
OUT=${OUT:-gpu-out}; mkdir -p "$OUT"
if ls .whl/*.whl >/dev/null 2>&1; then
  ${PY:-python3} -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=".:${PYTHONPATH:-}" PWDEPLOY_NO_PROGRESS=1 PYTHONUNBUFFERED=1
{ nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv; ${PY:-python3} -c \
  "import torch,onnxruntime as o;print('torch',torch.__version__,'cuda',torch.cuda.is_available(),torch.cuda.get_device_name(0));print('ort',o.__version__,o.get_available_providers())"; } \
  2>&1 | tee "$OUT/env.txt"
# 1. the CUDA tests (compress with Taylor/AutoBot + PW on the GPU, ORT CUDA provider where present)
timeout ${TEST_TIMEOUT:-150} ${PY:-python3} -m pytest -q -ra -p no:cacheprovider ${TESTS:-tests/test_cuda.py \
  tests/test_precision.py tests/test_runners.py tests/test_loss.py tests/test_prune.py} -k "not vgg16" 2>&1 \
  | tail -25 | tee "$OUT/pytest_gpu.txt"
# 1b. the scale benchmark's GPU part (fp32 vs bf16 ResNet-18 at 218x178, loader alone vs model alone, the CelebA
#     projection: Taylor with the schedule the pruning budget plans for 162,770 images + 1 retraining epoch)
#     and the calibration study on ORT's CUDA provider (needs onnxruntime-gpu in .whl/)
[ -n "${SCALE:-1}" ] && timeout ${SCALE_TIMEOUT:-180} ${PY:-python3} benchmarks/scale.py --quick --skip-ddp \
  --out "$OUT/scale.json" 2>&1 | tail -30 | tee "$OUT/scale.txt"
[ -n "${CALIBRATION:-}" ] && OUT="$OUT" QUICK=1 timeout ${CALIBRATION_TIMEOUT:-240} bash benchmarks/calibration_gpu.sh \
  2>&1 | tail -30 | tee "$OUT/calibration_gpu.txt"
# 2. the fairness grid on CUDA, in parallel workers
if [ -n "${FAIRNESS_ARGS:-}" ]; then
  # resume from cached cells (and their baselines) of an earlier run, if given
  [ -n "${FAIRNESS_CACHE:-}" ] && cp -r "$FAIRNESS_CACHE" "$OUT/fairness"
  timeout ${FAIRNESS_TIMEOUT:-330} ${PY:-python3} benchmarks/fairness.py --device cuda $FAIRNESS_ARGS --out "$OUT/fairness" \
    2>&1 | tail -60 | tee "$OUT/fairness.txt"
  tar czf "$OUT/fairness.tar.gz" -C "$OUT" fairness && rm -rf "$OUT/fairness"
fi
echo done
