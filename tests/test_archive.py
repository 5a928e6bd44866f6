"""Safe zip extraction: traversal, symlinks, zip bombs and atomicity, on tiny generated zips."""

from __future__ import annotations

import stat
import zipfile
from pathlib import Path

import pytest

from sejax.archive import safe_extract_zip
from sejax.errors import DataError


def _zip(path: Path, members: dict[str, bytes], *, compression=zipfile.ZIP_DEFLATED) -> Path:
    with zipfile.ZipFile(path, "w", compression=compression) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


def _only_entries(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_extracts_tree(tmp_path):
    members = {
        "Actor_01/03-01-01-01-01-01-01.wav": b"a" * 100,
        "Actor_02/03-01-02-01-01-01-02.wav": b"b" * 50,
        "README.txt": b"hello",
    }
    zip_path = _zip(tmp_path / "x.zip", members)
    target = safe_extract_zip(zip_path, tmp_path / "out")
    assert target == (tmp_path / "out").resolve()
    for name, data in members.items():
        assert (target / name).read_bytes() == data
    assert _only_entries(tmp_path) == ["out", "x.zip"]  # no temp folder left behind


def test_target_may_be_empty_folder_but_not_full(tmp_path):
    zip_path = _zip(tmp_path / "x.zip", {"a.txt": b"1"})
    (tmp_path / "empty").mkdir()
    assert (safe_extract_zip(zip_path, tmp_path / "empty") / "a.txt").read_bytes() == b"1"
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_bytes(b"mine")
    with pytest.raises(DataError, match="not an empty folder"):
        safe_extract_zip(zip_path, tmp_path / "full")
    assert _only_entries(tmp_path / "full") == ["keep.txt"]


@pytest.mark.parametrize(
    ("name", "fragment"),
    [
        ("../evil.txt", "'..'"),
        ("a/../../evil.txt", "'..'"),
        ("..\\evil.txt", "'..'"),
        ("/etc/evil.txt", "absolute path"),
        ("C:/evil.txt", "absolute path"),
    ],
)
def test_refuses_path_traversal(tmp_path, name, fragment):
    zip_path = _zip(tmp_path / "x.zip", {"good.txt": b"ok", name: b"evil"})
    with pytest.raises(DataError) as info:
        safe_extract_zip(zip_path, tmp_path / "sub" / "out")
    assert fragment in str(info.value)
    assert "refusing to extract" in str(info.value)
    assert not (tmp_path / "sub" / "out").exists()
    assert not (tmp_path / "evil.txt").exists()
    assert _only_entries(tmp_path / "sub") == []  # nothing written at all


def test_refuses_symlink_members(tmp_path):
    zip_path = tmp_path / "x.zip"
    with zipfile.ZipFile(zip_path, "w") as zf:
        info = zipfile.ZipInfo("link")
        info.create_system = 3
        info.external_attr = (stat.S_IFLNK | 0o777) << 16
        zf.writestr(info, "/etc/passwd")
        zf.writestr("ok.txt", b"ok")
    with pytest.raises(DataError, match="symbolic link"):
        safe_extract_zip(zip_path, tmp_path / "out")
    assert _only_entries(tmp_path) == ["x.zip"]


def test_refuses_duplicates(tmp_path):
    zip_path = tmp_path / "x.zip"
    with zipfile.ZipFile(zip_path, "w") as zf:
        zf.writestr("a.txt", b"1")
        with pytest.warns(UserWarning, match="Duplicate name"):
            zf.writestr("a.txt", b"2")
    with pytest.raises(DataError, match="duplicate member name"):
        safe_extract_zip(zip_path, tmp_path / "out")


def test_refuses_zip_bomb_by_ratio_before_writing(tmp_path):
    zip_path = _zip(tmp_path / "bomb.zip", {"zeros.bin": bytes(4 << 20)})
    assert zipfile.ZipFile(zip_path).getinfo("zeros.bin").compress_size < 10_000
    with pytest.raises(DataError, match="compression ratio"):
        safe_extract_zip(zip_path, tmp_path / "out")
    assert _only_entries(tmp_path) == ["bomb.zip"]
    # Small, very compressible files (text, silence) are fine.
    small = _zip(tmp_path / "small.zip", {"zeros.bin": bytes(100_000)})
    assert (safe_extract_zip(small, tmp_path / "ok") / "zeros.bin").stat().st_size == 100_000


def test_refuses_total_size_over_limit(tmp_path):
    zip_path = _zip(tmp_path / "x.zip", {"a": b"x" * 600, "b": b"y" * 600}, compression=0)
    with pytest.raises(DataError, match="max_total_bytes"):
        safe_extract_zip(zip_path, tmp_path / "out", max_total_bytes=1000)
    assert _only_entries(tmp_path) == ["x.zip"]
    assert (safe_extract_zip(zip_path, tmp_path / "out", max_total_bytes=1200) / "b").exists()


def test_corrupt_member_leaves_nothing(tmp_path):
    zip_path = _zip(tmp_path / "x.zip", {"a.txt": b"A" * 1000, "b.txt": b"B" * 1000}, compression=0)
    raw = bytearray(zip_path.read_bytes())
    at = raw.index(b"B" * 1000)
    raw[at : at + 4] = b"XXXX"  # CRC of b.txt no longer matches
    zip_path.write_bytes(bytes(raw))
    with pytest.raises(DataError, match=r"b\.txt"):
        safe_extract_zip(zip_path, tmp_path / "out")
    assert _only_entries(tmp_path) == ["x.zip"]  # a.txt was written to the temp dir, now gone


def test_not_a_zip(tmp_path):
    bad = tmp_path / "bad.zip"
    bad.write_bytes(b"this is not a zip")
    with pytest.raises(DataError, match="cannot read as a zip"):
        safe_extract_zip(bad, tmp_path / "out")
    with pytest.raises(DataError, match="cannot read as a zip"):
        safe_extract_zip(tmp_path / "missing.zip", tmp_path / "out")
