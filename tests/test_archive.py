"""Safe archive extraction: traversal, links, devices, bombs and atomicity, on tiny generated
zip and tar archives; and no pickle anywhere in the package."""

from __future__ import annotations

import io
import re
import stat
import tarfile
import zipfile
from pathlib import Path

import pytest

from sejax.data.archive import safe_extract, safe_extract_tar, safe_extract_zip
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


def test_a_target_filled_meanwhile_is_kept(tmp_path, monkeypatch):
    """Files that appear in the (checked empty) target while extracting are never replaced."""
    from sejax.data import archive

    zip_path = _zip(tmp_path / "x.zip", {"a.txt": b"1", "b.txt": b"2"})
    target = tmp_path / "out"
    copy = archive._copy_member

    def and_someone_else_writes(zf, info, dest):
        copy(zf, info, dest)
        target.mkdir(exist_ok=True)
        (target / "theirs.txt").write_bytes(b"theirs")

    monkeypatch.setattr(archive, "_copy_member", and_someone_else_writes)
    with pytest.raises(DataError, match="appeared while it was being written"):
        safe_extract_zip(zip_path, target)
    assert _only_entries(target) == ["theirs.txt"]
    assert _only_entries(tmp_path) == ["out", "x.zip"]  # no temp folder left behind


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


# ------------------------------------------------------------------------------------------
# tar archives and untrusted files in general.


def _tar(path: Path, members: list[tuple[tarfile.TarInfo, bytes | None]], mode="w:gz") -> Path:
    with tarfile.open(path, mode) as tf:
        for info, data in members:
            if data is not None:
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))
            else:  # the header alone, even of a sized file (Python 3.13's addfile refuses it)
                header = info.tobuf(tf.format, tf.encoding, tf.errors)
                tf.fileobj.write(header)
                tf.offset += len(header)
    return path


def _member(name: str, kind: bytes = tarfile.REGTYPE, **fields) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    for key, value in fields.items():
        setattr(info, key, value)
    return info


@pytest.mark.parametrize("mode, suffix", [("w", ".tar"), ("w:gz", ".tar.gz")])
def test_extracts_tar_tree(tmp_path, mode, suffix):
    members = {"Actor_01/03-01-01-01-01-01-01.wav": b"a" * 100, "README.txt": b"hello"}
    tar_path = _tar(tmp_path / f"x{suffix}", [(_member("Actor_01", tarfile.DIRTYPE), None)]
                    + [(_member(n), d) for n, d in members.items()], mode)  # fmt: skip
    target = safe_extract(tar_path, tmp_path / "out")
    for name, data in members.items():
        assert (target / name).read_bytes() == data
    assert _only_entries(tmp_path) == ["out", f"x{suffix}"]


@pytest.mark.parametrize(
    ("member", "fragment"),
    [
        (_member("/etc/evil.txt"), "absolute path"),
        (_member("../evil.txt"), "'..'"),
        (_member("a/../../evil.txt"), "'..'"),
        (_member("link", tarfile.SYMTYPE, linkname="/etc/passwd"), "outside the archive"),
        (_member("a/link", tarfile.SYMTYPE, linkname="../../x"), "outside the archive"),
        (_member("link", tarfile.SYMTYPE, linkname="good.txt"), "symbolic link"),
        (_member("hard", tarfile.LNKTYPE, linkname="../../etc/passwd"), "hard link"),
        (_member("dev", tarfile.CHRTYPE, devmajor=1, devminor=3), "device, fifo or socket"),
        (_member("fifo", tarfile.FIFOTYPE), "device, fifo or socket"),
        (_member("huge.bin", size=1 << 42), "over the limit"),
    ],
    ids=lambda x: x.name if isinstance(x, tarfile.TarInfo) else "",
)
def test_refuses_unsafe_tar_members_before_writing(tmp_path, member, fragment):
    # The unsafe member comes last: nothing, not even the good file, may be written.
    tar_path = _tar(tmp_path / "x.tar.gz", [(_member("good.txt"), b"ok"), (member, None)])
    with pytest.raises(DataError) as info:
        safe_extract_tar(tar_path, tmp_path / "sub" / "out")
    assert fragment in str(info.value) and repr(member.name) in str(info.value)
    assert "refusing to extract" in str(info.value)
    assert _only_entries(tmp_path / "sub") == []
    assert not (tmp_path / "evil.txt").exists()


def test_refuses_tar_over_the_size_limit_and_duplicates(tmp_path):
    tar_path = _tar(tmp_path / "x.tar", [(_member("a"), b"x" * 600), (_member("b"), b"y" * 600)],
                    "w")  # fmt: skip
    with pytest.raises(DataError, match="max_total_bytes"):
        safe_extract_tar(tar_path, tmp_path / "out", max_total_bytes=1000)
    assert (safe_extract_tar(tar_path, tmp_path / "out", max_total_bytes=1200) / "b").exists()
    dup = _tar(tmp_path / "d.tar", [(_member("a"), b"1"), (_member("a"), b"2")], "w")
    with pytest.raises(DataError, match="duplicate member name"):
        safe_extract_tar(dup, tmp_path / "dup")


def test_truncated_tar_leaves_nothing(tmp_path):
    tar_path = _tar(tmp_path / "x.tar", [(_member("a"), b"A" * 5000), (_member("b"), b"B" * 5000)],
                    "w")  # fmt: skip
    tar_path.write_bytes(tar_path.read_bytes()[:7000])  # cut inside b's data
    with pytest.raises(DataError, match="tar"):
        safe_extract_tar(tar_path, tmp_path / "out")
    assert _only_entries(tmp_path) == ["x.tar"]


def test_safe_extract_picks_the_format_by_content(tmp_path):
    zip_path = _zip(tmp_path / "data.bin", {"a.txt": b"z"})
    assert (safe_extract(zip_path, tmp_path / "z") / "a.txt").read_bytes() == b"z"
    (tmp_path / "junk.tar").write_bytes(b"neither")
    with pytest.raises(DataError, match="neither a zip nor a tar"):
        safe_extract(tmp_path / "junk.tar", tmp_path / "j")


def test_no_pickle_anywhere_in_the_package():
    """Nothing sejax reads from disk may run code: no pickle (or its relatives) at all."""
    package = Path(__file__).resolve().parents[1] / "sejax"
    banned = re.compile(
        r"^\s*(import|from)\s+(pickle|cPickle|dill|cloudpickle|joblib|shelve|marshal)\b"
        r"|allow_pickle\s*=\s*True|\bpickle\.loads?\(|torch\.load\(",
        re.MULTILINE,
    )
    found = [f"{path.relative_to(package)}: {m.group(0).strip()}"
             for path in sorted(package.rglob("*.py"))
             for m in banned.finditer(path.read_text(encoding="utf-8"))]  # fmt: skip
    assert found == []
