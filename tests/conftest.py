"""Suite-wide settings: one torch thread per process and no helper processes (emoprobe.threads: the machines have 2 cores and pytest
shares them with chapters it executes), and no decoded frames carried from one test to the next (tests that
swap decoders or rewrite files must see a decode)."""
import pytest


def pytest_configure(config):
    import os

    from emoprobe import threads

    threads.configure()
    # no helper processes (emoprobe.run) unless a test asks for them: tests and smoke chapters are small, and
    # pytest shares the 2 cores with the chapters it executes
    os.environ.setdefault(threads.WORKERS_ENV, "1")


@pytest.fixture(autouse=True)
def _fresh_frame_cache():
    from emoprobe import sampling

    sampling.clear_cache()
    yield
