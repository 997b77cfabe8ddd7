"""Suite-wide settings: one torch thread per process (emoprobe.threads: the machines have 2 cores and pytest
shares them with chapters it executes), and no decoded frames carried from one test to the next (tests that
swap decoders or rewrite files must see a decode)."""
import pytest


def pytest_configure(config):
    from emoprobe import threads

    threads.configure()


@pytest.fixture(autouse=True)
def _fresh_frame_cache():
    from emoprobe import sampling

    sampling.clear_cache()
    yield
