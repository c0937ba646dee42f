"""The code version written into every checkpoint (a leaf module: checkpoint.py reads it without
importing the package's facade)."""

__version__ = "0.1.0"
