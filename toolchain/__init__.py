"""vtool: train, export, quantize, benchmark and prove parity of image classifiers."""

__version__ = "0.1.0"
