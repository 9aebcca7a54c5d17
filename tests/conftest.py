"""Test session set-up shared by every test file."""

import os
import sys
from pathlib import Path

from hypothesis import settings

# The examples package lives at the repository root.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

# Property tests draw the same examples on every run, so CI cannot turn red on
# a draw it never made before; OLLA_HYPOTHESIS=explore draws fresh ones.
settings.register_profile("repeatable", derandomize=True)
settings.register_profile("explore", derandomize=False)
settings.load_profile(os.environ.get("OLLA_HYPOTHESIS", "repeatable"))
