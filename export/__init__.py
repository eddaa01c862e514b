"""Exporters, one module per format: ONNX (onnx.py), TFLite (tflite.py, with tflite_metadata.py for
the Task Library), ORT format (ort_format.py), and the app bundles that pack them (bundle.py).

Each writes its artifact, checks it against its reference (PyTorch for fp32, the fp32 artifact for
int8) and returns what it measured; a stage entry function (`run`, `run_fp32`, `run_int8`) takes
exactly the settings it reads, as edgepipe/stages.py describes."""
