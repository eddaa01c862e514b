"""edgepipe: distill, prune, quantize, export and benchmark Transformer classifiers for edge devices."""

__version__ = "0.1.0"
