"""``python -m emoprobe`` -> :func:`emoprobe.cli.main`."""
import sys

from emoprobe.cli import main

sys.exit(main())
