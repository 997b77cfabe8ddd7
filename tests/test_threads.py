"""emoprobe.threads: one definition of how many threads a process uses."""
import pytest

from emoprobe import threads


def test_default_and_override(monkeypatch):
    monkeypatch.delenv(threads.ENV, raising=False)
    assert threads.default() == 1
    monkeypatch.setenv(threads.ENV, "3")
    assert threads.default() == 3
    for bad in ("zero", "0", "-2"):
        monkeypatch.setenv(threads.ENV, bad)
        with pytest.raises(ValueError, match=threads.ENV):
            threads.default()


def test_configure_sets_torch_opencv_and_blas(monkeypatch):
    import cv2
    import torch
    from threadpoolctl import threadpool_info

    monkeypatch.delenv(threads.ENV, raising=False)
    assert threads.configure(2) == 2 and torch.get_num_threads() == 2 and cv2.getNumThreads() == 2
    assert threads.configure() == 1 and torch.get_num_threads() == 1 and cv2.getNumThreads() == 1
    assert all(p["num_threads"] == 1 for p in threadpool_info())


def test_workers(monkeypatch):
    monkeypatch.setenv(threads.WORKERS_ENV, "1")
    assert threads.workers() == 1
    monkeypatch.delenv(threads.WORKERS_ENV)
    assert 1 <= threads.workers() <= 2
    monkeypatch.setenv(threads.WORKERS_ENV, "x")
    with pytest.raises(ValueError, match=threads.WORKERS_ENV):
        threads.workers()
