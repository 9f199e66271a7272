"""hpsearch: coarse-to-fine hyperparameter search for PyTorch models.

Importing this package never imports torch: the CLI starts fast, and torch is
loaded only where trials train.
"""

from __future__ import annotations

__version__ = "0.1.0"
