"""Device side of a pwdeploy bundle: check every sha256, build the engine, rerun the per-group gate.

Runs on the Jetson with nothing but Python 3.8+, numpy and one runtime (TensorRT, through Polygraphy or its
own bindings, or ONNX Runtime). No torch and no training code: a bundle carries this package together with
``pwdeploy/__init__.py``, ``errors.py``, ``metrics.py``, ``gate.py``, ``manifest.py`` and ``safe_extract.py``,
so that inside an unpacked bundle ``python3 -m pwdeploy.device verify .`` works.

Importing this package is free of numpy on purpose: the `pwdeploy ship` remote installer loads it with the
standard library alone.
"""

EXIT_PASSED = 0
EXIT_FAILED = 1
EXIT_ERROR = 2
RESULT_PREFIX = "PWDEPLOY_RESULT "  # the last stdout line of a machine-read command: prefix + JSON
