"""Error types and error tests shared by several modules (a leaf module: it imports nothing from emoprobe).

``DataError`` lives here so that :mod:`emoprobe.data` and :mod:`emoprobe.sampling` can both raise it without
importing each other; ``emoprobe.data.DataError`` is the same class.
"""
from __future__ import annotations

import sys


class DataError(ValueError):
    """Bad input data; the message names the file (and line or row where there is one) and the reason."""


def is_oom(e: BaseException) -> bool:
    """True for an out-of-memory error: ``torch.cuda.OutOfMemoryError`` or a RuntimeError / MemoryError whose
    message says "out of memory" (CPU allocators, older torch). Does not import torch."""
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(e, getattr(getattr(torch, "cuda", None), "OutOfMemoryError", ())):
        return True
    return isinstance(e, (RuntimeError, MemoryError)) and "out of memory" in str(e).lower()
