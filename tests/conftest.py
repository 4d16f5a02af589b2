import importlib
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from shared.core import numeric  # noqa: E402

numeric.activate("portable")  # the test process itself runs the default profile
importlib.import_module("shared.core.pinned")  # and torch configured for it, before any test imports torch

from tests.helpers import run_cli  # noqa: E402


@pytest.fixture
def cli():
    return run_cli
