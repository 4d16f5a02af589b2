"""Built-in texts: the demo and the tests run on these, with no network."""
from pathlib import Path

HERE = Path(__file__).resolve().parent
MISSION_LOG = HERE / "mission_log.txt"


def mission_log(size: int | None = None) -> bytes:
    data = MISSION_LOG.read_bytes()
    return data if size is None else data[:size]
