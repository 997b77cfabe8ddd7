"""emoprobe: the shared library of the book "Why do VLMs struggle to recognise human emotions?".

Flat modules, one concept each (see CONTRIBUTING.md for the contracts between them).
"""
__version__ = "0.1.0"
