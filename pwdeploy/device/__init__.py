"""Device side of a pwdeploy bundle: check every sha256, build the engine, rerun the per-group gate.

Runs on the Jetson with nothing but Python 3.8+, numpy and one runtime (TensorRT, through Polygraphy or its
own bindings, or ONNX Runtime). No torch and no training code: a bundle carries this package together with
the rest of the portable core (pwdeploy.package.DEVICE_CODE: names, hashing and atomic writes, sampling,
metrics and gate, manifest, runners), run by the device's trust anchor (``python3 -I -B pwdeploy-device.py
verify BUNDLE``, see anchor.py) once the anchor's own code has checked the bundle's signature and every sha256. ``python3 -m pwdeploy.device
verify .`` inside a bundle runs the same checks with the bundle's own code: a self-check, not a trust check.

Importing this package is free of numpy on purpose: the `pwdeploy ship` remote installer loads it with the
standard library alone.
"""

from ..errors import EXIT_BAD_INPUT as EXIT_ERROR, EXIT_GATE_FAILED as EXIT_FAILED, EXIT_INTERNAL, \
    EXIT_OK as EXIT_PASSED  # noqa: F401 - the exit codes the README documents, one owner

RESULT_PREFIX = "PWDEPLOY_RESULT "  # the last stdout line of a machine-read command: prefix + JSON
