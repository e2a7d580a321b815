"""ffx: reproducible face-forgery datasets."""

__version__ = "0.1.0"
