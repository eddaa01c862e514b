"""Files copied as they are to devices and into app bundles: runner.py (the device-side benchmark
runner) and app_check.py (an app's reference tokenizer and inference).

They must stay standalone - numpy and the runtime (onnxruntime / ai-edge-litert) only, never
torch, transformers or edgepipe - so a board or a phone with Python runs them, and an app
developer reads them on their own (tests/test_layers.py checks their imports)."""
