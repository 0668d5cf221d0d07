"""``build_engine.sh``: builds the TensorRT engine on the device, where it will run.

TensorRT engines are tied to the GPU and the TensorRT version that built them, so a bundle ships the ONNX
model and this script. The script picks the trtexec command line by the installed TensorRT major version:

- TensorRT 10 (JetPack 6.1/6.2): networks are weakly typed unless asked otherwise; ``--fp16`` / ``--int8``
  let the builder use reduced-precision kernels for the fp16 ONNX / the Q/DQ ONNX.
- TensorRT 11 (JetPack 7.2.2+): every network is strongly typed and the precision flags are gone; the
  precision comes from the ONNX itself (fp16 tensors, Q/DQ nodes), so no precision flag is passed.

Both use a timing cache (``--timingCacheFile``) so rebuilding after an upgrade is fast. The engine is written
under a temporary name and renamed when trtexec succeeds: a failed build never leaves a half engine.
Standard library only, Python 3.8 compatible (this module also runs on the device).
"""

from __future__ import annotations

import os
import subprocess
from typing import Any, Dict, Optional

from ..names import BUILD_SCRIPT, ENGINE

try:
    from ..errors import PwdeployError as _BaseError
except ImportError:  # pragma: no cover
    _BaseError = Exception  # type: ignore[misc,assignment]

TIMING_CACHE = "timing.cache"
BUILD_LOG = "build_engine.log"

_TEMPLATE = r"""#!/usr/bin/env bash
# Builds the TensorRT engine of __BUNDLE_ID__ ON THIS DEVICE: engines do not move between GPUs or
# TensorRT versions. Written by pwdeploy __VERSION__.
#   ./build_engine.sh [ENGINE]      default ENGINE: model.plan beside this script
# Environment: TRTEXEC=/path/to/trtexec, PWDEPLOY_TRT_VERSION=10|11 (skip detection),
#              PWDEPLOY_TIMING_CACHE=/path/timing.cache (share one cache between releases).
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
MODEL="$HERE/__MODEL__"
ENGINE="${1:-$HERE/__ENGINE__}"
CACHE="${PWDEPLOY_TIMING_CACHE:-$HERE/__CACHE__}"
PRECISION="__PRECISION__"
INPUT="__INPUT__"
DYNAMIC_BATCH="__DYNAMIC__"
SHAPE_MIN="__SHAPE_MIN__"
SHAPE_OPT="__SHAPE_OPT__"
SHAPE_MAX="__SHAPE_MAX__"

die() { echo "error: $*" >&2; exit 2; }

find_trtexec() {
  if [ -n "${TRTEXEC:-}" ]; then echo "$TRTEXEC"; return; fi
  if command -v trtexec >/dev/null 2>&1; then command -v trtexec; return; fi
  for p in /usr/src/tensorrt/bin/trtexec /usr/local/tensorrt/bin/trtexec /opt/tensorrt/bin/trtexec; do
    if [ -x "$p" ]; then echo "$p"; return; fi
  done
  die "trtexec not found: install TensorRT (JetPack: sudo apt install nvidia-jetpack) or set TRTEXEC=/path/to/trtexec"
}

# Major version of the TensorRT that trtexec links: its banner says [TensorRT vMMmmpp] (8.x: vMmpp).
trt_major() {
  if [ -n "${PWDEPLOY_TRT_VERSION:-}" ]; then echo "${PWDEPLOY_TRT_VERSION%%.*}"; return; fi
  local code
  code="$("$TRTEXEC_BIN" --help 2>&1 | sed -n 's/.*\[TensorRT v\([0-9][0-9]*\)\].*/\1/p' | head -n 1 || true)"
  if [ -n "$code" ]; then
    if [ "$code" -ge 100000 ]; then echo $((code / 10000)); else echo $((code / 1000)); fi
    return
  fi
  local v
  v="$(python3 -c 'import tensorrt; print(tensorrt.__version__)' 2>/dev/null || true)"
  echo "${v%%.*}"
}

[ -f "$MODEL" ] || die "$MODEL is missing: unpack the whole bundle"
TRTEXEC_BIN="$(find_trtexec)"
MAJOR="$(trt_major)"
case "$MAJOR" in
  ''|*[!0-9]*) die "cannot tell the TensorRT version from $TRTEXEC_BIN: set PWDEPLOY_TRT_VERSION=10 or 11" ;;
esac

ARGS=(--onnx="$MODEL" --saveEngine="$ENGINE.partial" --timingCacheFile="$CACHE" --skipInference)
if [ "$DYNAMIC_BATCH" = "1" ]; then
  ARGS+=(--minShapes="$INPUT:$SHAPE_MIN" --optShapes="$INPUT:$SHAPE_OPT" --maxShapes="$INPUT:$SHAPE_MAX")
fi
if [ "$MAJOR" -lt 10 ]; then
  die "TensorRT $MAJOR is too old for this bundle: use TensorRT 10 (JetPack 6.1 or 6.2) or 11 (JetPack 7.2.2+)"
elif [ "$MAJOR" -eq 10 ]; then
  # TensorRT 10: weakly typed; allow the reduced-precision kernels the target asks for.
  case "$PRECISION" in
    fp16) ARGS+=(--fp16) ;;
    int8) ARGS+=(--int8) ;;  # explicit quantization: the Q/DQ nodes say where
  esac
else
  # TensorRT 11+: always strongly typed, precision flags removed; the ONNX's types and Q/DQ nodes decide.
  :
fi

echo "building $ENGINE with TensorRT $MAJOR ($PRECISION): $TRTEXEC_BIN ${ARGS[*]}"
rm -f "$ENGINE.partial"
trap 'rm -f "$ENGINE.partial"' EXIT  # a failed build leaves no half engine behind
"$TRTEXEC_BIN" "${ARGS[@]}"
[ -s "$ENGINE.partial" ] || die "trtexec finished without writing an engine"
mv -f "$ENGINE.partial" "$ENGINE"
echo "engine written: $ENGINE"
"""


class EngineBuildError(_BaseError):
    """build_engine.sh failed on the device."""


def render_script(*, bundle_id: str, version: str, model_file: str, precision: str, input_name: str,
                  input_shape: list, min_batch: int, opt_batch: int, max_batch: int) -> str:
    """The bundle's build_engine.sh, with the model, input and batch range written in."""
    dims = [int(d) for d in input_shape]
    dynamic = dims[0] < 0
    rest = "x".join(str(d) for d in dims[1:])

    def shape(batch: int) -> str:
        return "{}x{}".format(batch, rest)

    values = {
        "__BUNDLE_ID__": bundle_id, "__VERSION__": version, "__MODEL__": model_file, "__ENGINE__": ENGINE,
        "__CACHE__": TIMING_CACHE, "__PRECISION__": precision, "__INPUT__": input_name,
        "__DYNAMIC__": "1" if dynamic else "0", "__SHAPE_MIN__": shape(min_batch),
        "__SHAPE_OPT__": shape(opt_batch), "__SHAPE_MAX__": shape(max_batch),
    }
    text = _TEMPLATE
    for key, value in values.items():
        if any(c in str(value) for c in "\"$`\\\n"):
            raise ValueError("unsafe value for {}: {!r}".format(key, value))
        text = text.replace(key, str(value))
    return text


def build_engine(bundle_dir: str, manifest: Dict[str, Any], *, engine_path: Optional[str] = None,
                 timeout: float = 3600.0, log=print, state_dir: Optional[str] = None) -> str:
    """Run the bundle's build_engine.sh; returns the engine path. The engine, the timing cache and
    build_engine.log go to ``state_dir`` (default: beside the bundle's files, for a hand build)."""
    script = os.path.join(bundle_dir, manifest["engine"]["build_script"])
    out_dir = state_dir or bundle_dir
    engine_path = engine_path or os.path.join(out_dir, ENGINE)
    log_path = os.path.join(out_dir, BUILD_LOG)
    env = dict(os.environ, PWDEPLOY_TIMING_CACHE=os.path.join(out_dir, TIMING_CACHE))
    log("building the TensorRT engine on this device (log: {}) ...".format(log_path))
    try:
        with open(log_path, "wb") as out:
            proc = subprocess.run(["bash", script, engine_path], stdout=out, stderr=subprocess.STDOUT,
                                  timeout=timeout, cwd=out_dir, env=env)
    except subprocess.TimeoutExpired:
        raise EngineBuildError("build_engine.sh ran longer than {:.0f} s: see {} (a first build on a small "
                               "Jetson can take minutes; raise --build-timeout)".format(timeout, log_path)) from None
    if proc.returncode != 0 or not os.path.isfile(engine_path):
        tail = _last_line(log_path)
        raise EngineBuildError("build_engine.sh failed (exit {}): {} (full log: {})".format(
            proc.returncode, tail, log_path))
    return engine_path


def _last_line(path: str) -> str:
    try:
        with open(path, "r", errors="replace") as fh:
            lines = [ln.strip() for ln in fh if ln.strip()]
    except OSError:
        return "no log"
    errors = [ln for ln in lines if "error" in ln.lower()]
    return (errors or lines or ["no output"])[-1][:300]
