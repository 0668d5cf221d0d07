"""File names of a run's artifacts and of a bundle: one owner for each name the host and the device share.

Portable core (no imports at all, Python 3.8): the device bundle ships it and the trust anchor embeds it.
"""

MODEL_ONNX = "model.onnx"
ORIGINAL_ONNX = "original.onnx"
FP16_ONNX = "model.fp16.onnx"
INT8_ONNX = "model.int8.onnx"
ENGINE = "model.plan"  # a TensorRT engine, built on the device it runs on
ENGINE_SUFFIXES = (".plan", ".engine")  # what a TensorRT engine file may be called
VERIFICATION_SET = "verification_set.npz"
MANIFEST = "manifest.json"
SIGNATURE_FILE = "manifest.json.sig"  # OpenSSH signature of manifest.json: the one file the manifest cannot list
BUILD_SCRIPT = "build_engine.sh"
