"""A full disk (ENOSPC) on a small tmpfs: `alice compress`, `bob decompress` and a checkpoint
write each fail with one line naming the path and what to do, a non-zero exit and nothing
half-written; once space is freed, the same command succeeds (a checkpoint keeps the previous
one, so a run resumes from it). The suite runs as root; without mount rights these skip."""
import shutil

import pytest

from shared.app import checkpoint
from shared.app.files import StorageError
from shared.core.pinned import torch
from tests.helpers import expect_error, fill, leftovers, made_once, run_cli_with, tmpfs

TEXT = b"Sol 12. Habitat pressure nominal; the greenhouse lights cycle at dusk.\n" * 10   # a full disk refuses any size
ENOSPC = "no space left on device; free some space or choose another folder"


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """TEXT compressed once on a roomy disk, by the command the tests run."""
    return made_once(tmp_path_factory, TEXT, "-q")


@pytest.fixture
def full(tmp_path):
    """A 256 KiB tmpfs filled to the last byte, and a place for inputs outside it."""
    (tmp_path / "in.txt").write_bytes(TEXT)
    with tmpfs(tmp_path / "disk", "256k") as disk:
        fill(disk)
        yield tmp_path, disk


def test_compress_into_a_full_disk(cli, full, made):
    here, disk = full
    out = disk / "c.mrs"
    r = cli("sender", "compress", str(here / "in.txt"), str(out), "--preset", "tiny", "-q")
    expect_error(r, f"alice: error: cannot write {str(out)!r}: {ENOSPC}, then run again", disk, ["filler"])
    (disk / "filler").unlink()                       # space freed: the same command now works
    r = cli("sender", "compress", str(here / "in.txt"), str(out), "--preset", "tiny", "-q")
    assert r.returncode == 0, r.stderr.decode()
    # byte for byte what the same command writes on a roomy disk (which the next test decodes to TEXT)
    assert out.read_bytes() == (made / "c.mrs").read_bytes()
    assert leftovers(disk) == ["c.mrs"]


def test_decompress_into_a_full_disk(cli, full, made):
    here, disk = full
    shutil.copy(made / "c.mrs", here / "c.mrs")
    out = disk / "back.txt"
    r = cli("receiver", "decompress", str(here / "c.mrs"), str(out), "-q", "--stats-json", str(here / "s.json"))
    expect_error(r, f"bob: error: cannot write {str(out)!r}: {ENOSPC}, then run again", disk, ["filler"])
    assert not (here / "s.json").exists()            # no statistics for a run that wrote nothing
    (disk / "filler").unlink()
    r = cli("receiver", "decompress", str(here / "c.mrs"), str(out), "-q")
    assert r.returncode == 0, r.stderr.decode()
    assert out.read_bytes() == TEXT


def test_stdout_into_a_full_disk(full):
    """`alice compress in - > full/c.mrs`: the shell opened the file, so stdout hits the full disk."""
    here, disk = full
    with open(disk / "c.mrs", "wb") as stdout:
        r = run_cli_with("sender", "compress", str(here / "in.txt"), "-", "--preset", "tiny", stdout=stdout)
    expect_error(r, f"alice: error: cannot write '<standard output>': {ENOSPC}, then run again")


def test_checkpoint_on_a_full_disk_keeps_the_previous_one(tmp_path):
    with tmpfs(tmp_path / "disk", "256k") as disk:
        path = str(disk / "checkpoint.pt")
        checkpoint.save(path, {"step": 1})
        checkpoint.write_json(str(disk / "meta.json"), {"step": 1})
        fill(disk)
        weights = torch.arange(50_000, dtype=torch.float32)     # torch.save fails inside its zip writer
        for write, name, obj in ((checkpoint.save, "checkpoint.pt", {"step": 2, "w": weights}),
                                 (checkpoint.write_json, "meta.json", {"step": 2, "pad": "x" * 8192})):
            with pytest.raises(StorageError) as e:
                write(str(disk / name), obj)
            assert str(e.value) == (f"cannot write checkpoint {str(disk / name)!r}: {ENOSPC}, "
                                    f"then run again to resume")
        assert leftovers(disk) == ["checkpoint.pt", "filler", "meta.json"]      # no .tmp left behind
        assert checkpoint.load(path) == {"step": 1}
        assert checkpoint.read_json(str(disk / "meta.json")) == {"step": 1}
