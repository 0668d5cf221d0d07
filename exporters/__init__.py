"""torch -> ONNX, ONNX -> fp16 ONNX / Q/DQ INT8 ONNX, ONNX -> TensorRT engine. No training code here."""
