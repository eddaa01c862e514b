"""Model writers (ONNX now; TFLite later)."""
