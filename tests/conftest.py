import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from shared import numeric  # noqa: E402

numeric.activate("portable")  # the test process itself runs the default profile


def run_cli(*args, env=None, input_bytes=None, timeout=300):
    """Run `python -m sender|receiver ...` as a separate OS process."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("MARSLINK_")}
    full_env["PYTHONPATH"] = str(ROOT)
    full_env.update(env or {})
    return subprocess.run([sys.executable, "-m", *args], cwd=ROOT, env=full_env, input=input_bytes,
                          capture_output=True, timeout=timeout)


@pytest.fixture
def cli():
    return run_cli
