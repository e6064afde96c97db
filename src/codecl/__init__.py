"""codecl: continual-learning experiments on sequence-to-sequence code models."""

__version__ = "0.1.0"
