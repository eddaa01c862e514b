"""Inference adapters over real runtimes (ONNX Runtime now; LiteRT later)."""
