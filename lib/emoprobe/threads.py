"""How many CPU threads an emoprobe process gives torch: one definition for backends, training, chapters, CLI
and tests.

Policy (measured on the project's 2-core machines, issue 11): torch runs its intra-op work on **one** thread per
process, and one inter-op thread. OpenMP threads spin-wait for each other; on 2 cores shared with any other
work, 2 intra-op threads made MicroVLM's forward passes 9-20x slower than 1 (311 ms vs 26 ms per clip), while on
an idle machine a second thread gained little on models this small. The second core is used instead by work
that overlaps the model: the run loop decodes the next batch of clips in a background thread
(:mod:`emoprobe.run`), and independent runs go to separate processes (``--jobs 2`` in training,
``--shard i/n`` in the CLI), each with one torch thread.

``EMOPROBE_THREADS=n`` overrides the default (e.g. on a large dedicated machine); on CUDA the thread count only
affects the small CPU-side work.
"""
from __future__ import annotations

import os

ENV = "EMOPROBE_THREADS"
DEFAULT = 1
WORKERS_ENV = "EMOPROBE_WORKERS"


def default() -> int:
    """Threads per process: ``$EMOPROBE_THREADS`` if set (a positive integer), else :data:`DEFAULT`."""
    n = _env_count(ENV, "threads")
    return DEFAULT if n is None else n


def _env_count(name: str, what: str) -> int | None:
    """The positive integer in environment variable ``name`` (None when unset or empty)."""
    v = os.environ.get(name, "").strip()
    if not v:
        return None
    try:
        n = int(v)
    except ValueError:
        raise ValueError(f"{name}={v!r} is not an integer number of {what}") from None
    if n < 1:
        raise ValueError(f"{name}={v!r}: the number of {what} must be >= 1")
    return n


def configure(n: int | None = None) -> int:
    """Set torch's intra-op threads to ``n`` (default :func:`default`) and, where still possible, its inter-op
    threads to 1. Returns the intra-op thread count now in effect. Idempotent; cheap to call before each use."""
    import torch

    n = default() if n is None else int(n)
    if n < 1:
        raise ValueError(f"number of threads must be >= 1, got {n}")
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
    try:
        if torch.get_num_interop_threads() != 1:
            torch.set_num_interop_threads(1)
    except RuntimeError:  # only settable before the first inter-op parallel work of the process
        pass
    _others(n)
    return torch.get_num_threads()


def _others(n: int) -> None:
    """The other thread pools a run uses: OpenCV's (visual prompts, optical flow) and the BLAS/OpenMP pools of
    NumPy/SciPy/scikit-learn (bootstrap statistics, probes), through threadpoolctl."""
    try:
        import cv2

        if cv2.getNumThreads() != n:
            cv2.setNumThreads(n)
    except ImportError:
        pass
    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(limits=n)
    except ImportError:
        pass


def workers() -> int:
    """Processes a long CPU run may use (the calling one included): ``$EMOPROBE_WORKERS`` if set, else the number
    of cores, at most 2. :func:`emoprobe.run.classify` starts ``workers() - 1`` helper processes (one torch thread
    each) for runs with many answers still to compute on a CPU model; they share the work through run-store
    leases. 1 turns helpers off (the test suite does)."""
    n = _env_count(WORKERS_ENV, "processes")
    return max(1, min(2, os.cpu_count() or 1)) if n is None else n
