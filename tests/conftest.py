import sys
from pathlib import Path

# Let ``import golden`` work from any test module.
sys.path.insert(0, str(Path(__file__).resolve().parent))

import os  # noqa: E402

from hypothesis import settings  # noqa: E402

# CI must not turn red on a new random example: there hypothesis replays a fixed sequence.
# Local runs explore new examples every time.
settings.register_profile("ci", derandomize=True, deadline=None)
if os.environ.get("CI"):
    settings.load_profile("ci")
