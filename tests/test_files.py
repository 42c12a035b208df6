"""Files on disk: encodings, BOMs, line endings, unreadable files, permissions, exclusion."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from typer.testing import CliRunner

from gradfix import files, runner
from gradfix.cli import app
from gradfix.codemods import FixResult

SAFE = "import torch\nx = torch.zeros(3)\ny = torch.sigmoid(x)\ny += 1\n"
SAFE_FIXED = "import torch\nx = torch.zeros(3)\ny = torch.sigmoid(x)\ny = y + 1\n"


def run(*args: object):
    return CliRunner().invoke(app, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture(autouse=True)
def in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)


def put(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


# --- encodings and line endings ----------------------------------------------------------------


def test_latin1_cookie_file_is_fixed_and_stays_latin1(tmp_path):
    source = "# -*- coding: latin-1 -*-\nimport torch\n# caf\u00e9\nx = torch.zeros(3)\ny = torch.sigmoid(x)\ny += 1  # \u00e9t\u00e9\n"
    path = put(tmp_path / "lat.py", source.encode("latin-1"))
    result = run("fix", "lat.py")
    assert result.exit_code == 0, result.output
    expected = source.replace("y += 1", "y = y + 1").encode("latin-1")
    assert path.read_bytes() == expected
    assert b"\xe9t\xe9" in path.read_bytes()  # one byte per é: not UTF-8


def test_utf8_bom_is_kept(tmp_path):
    path = put(tmp_path / "bom.py", files.UTF8_BOM + SAFE.encode())
    assert run("fix", "bom.py").exit_code == 0
    assert path.read_bytes() == files.UTF8_BOM + SAFE_FIXED.encode()


def test_bom_file_findings_have_the_right_columns(tmp_path):
    put(tmp_path / "bom.py", files.UTF8_BOM + SAFE.encode())
    assert run("check", "bom.py").stdout.startswith("bom.py:4:1: GF101")


def test_crlf_file_stays_crlf_on_every_line(tmp_path):
    path = put(tmp_path / "crlf.py", SAFE.replace("\n", "\r\n").encode() + b"y *= 2\r\n")
    assert run("fix", "crlf.py").exit_code == 0
    data = path.read_bytes()
    assert data == (SAFE_FIXED + "y = y * 2\n").replace("\n", "\r\n").encode()
    assert data.count(b"\n") == data.count(b"\r\n") == 5


def test_file_without_trailing_newline(tmp_path):
    path = put(tmp_path / "nonl.py", SAFE.rstrip("\n").encode())
    assert run("fix", "nonl.py").exit_code == 0
    assert path.read_bytes() == SAFE_FIXED.rstrip("\n").encode()


def test_form_feed_and_unicode_line_separators_survive(tmp_path):
    source = "import torch\n\x0c\ns = 'a\u2028b'\nx = torch.zeros(3)\ny = torch.sigmoid(x)\ny += 1\n"
    path = put(tmp_path / "ff.py", source.encode())
    assert run("fix", "ff.py").exit_code == 0
    assert path.read_bytes() == source.replace("y += 1", "y = y + 1").encode()


def test_invalid_utf8_is_one_line_error_and_untouched_others_fixed(tmp_path):
    bad = put(tmp_path / "bad.py", SAFE.encode() + b"s = '\xff\xfe'\n")
    good = put(tmp_path / "good.py", SAFE.encode())
    result = run("fix", ".")
    assert result.exit_code == 2
    assert result.stderr.splitlines() == [
        "bad.py: cannot decode as utf-8: invalid start byte (byte 0xff on line 5)"
    ]
    assert bad.read_bytes() == SAFE.encode() + b"s = '\xff\xfe'\n"
    assert good.read_text() == SAFE_FIXED


def test_invalid_utf8_on_the_first_line(tmp_path):
    put(tmp_path / "bad.py", b"# \xff\n" + SAFE.encode())
    result = run("check", "bad.py")
    assert result.exit_code == 2
    assert result.stderr.strip() == "bad.py: cannot decode as utf-8: invalid start byte (byte 0xff on line 1)"


def test_unknown_encoding_cookie(tmp_path):
    put(tmp_path / "bad.py", b"# coding: klingon\n" + SAFE.encode())
    result = run("check", "bad.py")
    assert result.exit_code == 2
    assert result.stderr.startswith("bad.py: cannot decode: unknown encoding")


def test_null_byte_is_a_syntax_error(tmp_path):
    put(tmp_path / "nul.py", b"import torch\nx = 1\x00\n")
    result = run("check", "nul.py")
    assert result.exit_code == 2
    assert result.stderr.startswith("nul.py:")
    assert "syntax error" in result.stderr


def test_fixed_text_not_representable_in_the_file_encoding_is_not_written(tmp_path, monkeypatch):
    source = "# -*- coding: latin-1 -*-\n" + SAFE
    path = put(tmp_path / "lat.py", source.encode("latin-1"))

    def fake_fix(text, display, **kwargs):
        return FixResult(source=text + "# \u2192\n", applied={"GF101": 1})

    monkeypatch.setattr(runner, "fix_source", fake_fix)
    result = run("fix", "lat.py")
    assert result.exit_code == 2
    assert "lat.py: cannot encode the fixed text as iso-8859-1: character '\u2192' on line 6" in result.stderr
    assert path.read_bytes() == source.encode("latin-1")
    assert "Fixed" not in result.stdout


# --- unreadable files ---------------------------------------------------------------------------


def test_broken_symlink_is_an_error_others_processed(tmp_path):
    os.symlink(tmp_path / "nowhere.py", tmp_path / "link.py")
    put(tmp_path / "good.py", SAFE.encode())
    result = run("fix", ".")
    assert result.exit_code == 2
    assert result.stderr.strip().startswith("link.py: broken symbolic link")
    assert (tmp_path / "good.py").read_text() == SAFE_FIXED


def test_directory_is_not_read_as_a_file(tmp_path):
    (tmp_path / "x.py").mkdir()
    with pytest.raises(files.FileError, match=r"^x.py: is a directory"):
        files.read_source("x.py")
    # Named on the command line, a folder is searched, whatever its name.
    put(tmp_path / "x.py" / "inner.py", SAFE.encode())
    assert run("check", "x.py").stdout.startswith("x.py/inner.py:4:1:")


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode")
def test_permission_denied_is_an_error(tmp_path):
    locked = put(tmp_path / "locked.py", SAFE.encode())
    locked.chmod(0)
    put(tmp_path / "good.py", SAFE.encode())
    try:
        result = run("check", ".")
    finally:
        locked.chmod(0o644)
    assert result.exit_code == 2
    assert result.stderr.strip() == "locked.py: cannot read: Permission denied"
    assert "good.py:4:1" in result.stdout


def test_permission_denied_simulated_for_root(tmp_path, monkeypatch):
    put(tmp_path / "locked.py", SAFE.encode())
    put(tmp_path / "good.py", SAFE.encode())
    real_open = open

    def guarded_open(path, *args, **kwargs):
        if os.path.basename(path) == "locked.py":
            raise PermissionError(13, "Permission denied", path)
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(files, "open", guarded_open, raising=False)
    result = run("fix", ".")
    assert result.exit_code == 2
    assert result.stderr.strip() == "locked.py: cannot read: Permission denied"
    assert (tmp_path / "good.py").read_text() == SAFE_FIXED
    assert (tmp_path / "locked.py").read_text() == SAFE


def test_special_file_is_refused(tmp_path):
    os.mkfifo(tmp_path / "pipe.py")
    result = run("check", "pipe.py")  # must not block reading a FIFO
    assert result.exit_code == 2
    assert result.stderr.strip() == "pipe.py: not a regular file"


def test_large_file_is_skipped_with_a_message(tmp_path, monkeypatch):
    monkeypatch.setattr(files, "MAX_FILE_BYTES", 20)
    big = put(tmp_path / "big.py", SAFE.encode())
    result = run("fix", "big.py")
    assert result.stderr.strip() == "big.py: skipped: file is larger than 20 bytes"
    assert result.exit_code == 0
    assert big.read_text() == SAFE
    assert "larger than 10 MB" in str(files.FileSkipped("x", "skipped: file is larger than " + files._size_text(10 * 1024 * 1024)))


# --- writing ------------------------------------------------------------------------------------


def test_permissions_are_preserved(tmp_path):
    path = put(tmp_path / "a.py", SAFE.encode())
    path.chmod(0o754)
    assert run("fix", "a.py").exit_code == 0
    assert path.read_text() == SAFE_FIXED
    assert stat.S_IMODE(path.stat().st_mode) == 0o754


def test_no_temporary_files_left_behind(tmp_path):
    put(tmp_path / "a.py", SAFE.encode())
    run("fix", "a.py")
    # The result cache (.gradfix_cache) is expected; no temp file anywhere, in it either.
    assert sorted(p.name for p in tmp_path.iterdir()) == [".gradfix_cache", "a.py"]
    assert not [p for p in tmp_path.rglob("*") if ".tmp" in p.name or "gradfix-tmp" in p.name]


def test_symlinked_file_is_fixed_through_the_link(tmp_path):
    target = put(tmp_path / "real" / "a.py", SAFE.encode())
    (tmp_path / "src").mkdir()
    os.symlink(target, tmp_path / "src" / "a.py")
    assert run("fix", "src/a.py").exit_code == 0
    assert os.path.islink(tmp_path / "src" / "a.py")
    assert target.read_text() == SAFE_FIXED


def test_read_only_file_is_not_replaced(tmp_path):
    path = put(tmp_path / "a.py", SAFE.encode())
    path.chmod(0o444)
    result = run("fix", "a.py")
    assert result.exit_code == 2
    assert result.stderr.strip() == "a.py: cannot write: the file is read-only"
    assert path.read_text() == SAFE
    assert stat.S_IMODE(path.stat().st_mode) == 0o444


def test_write_atomic_replaces_content_and_keeps_mode(tmp_path):
    path = put(tmp_path / "f.py", b"old\n")
    path.chmod(0o640)
    inode = path.stat().st_ino
    files.write_atomic(str(path), b"new\r\n")
    assert path.read_bytes() == b"new\r\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    assert path.stat().st_ino != inode  # a new file was renamed over it


# --- paths, discovery, exclusion -----------------------------------------------------------------


def test_display_path(tmp_path):
    assert files.display_path(tmp_path / "a" / "b.py", str(tmp_path)) == "a/b.py"
    outside = files.display_path(tmp_path / "b.py", str(tmp_path / "a"))
    assert outside == str(tmp_path / "b.py")
    assert files.patch_path(tmp_path / "b.py", str(tmp_path / "a")) == "../b.py"


@pytest.mark.parametrize(
    "pattern, path, is_dir, excluded",
    [
        ("fixtures", "fixtures", True, True),
        ("fixtures", "src/fixtures", True, True),  # a bare name matches at any depth
        ("fixtures", "src/fixtures.py", False, False),
        ("*_pb2.py", "a/b/x_pb2.py", False, True),
        ("src/*.py", "src/a.py", False, True),
        ("src/*.py", "src/sub/a.py", False, False),  # `*` stays in one folder
        ("src/**/*.py", "src/sub/deep/a.py", False, True),
        ("src/**/*.py", "src/a.py", False, True),
        ("src/legacy", "src/legacy", True, True),
        ("src/legacy", "other/src/legacy", True, False),  # anchored at the project root
        ("./src/legacy/", "src/legacy", True, True),
        ("build/", "build", False, False),  # a trailing slash: folders only
        ("gen_?.py", "gen_a.py", False, True),
        ("gen_[ab].py", "gen_c.py", False, False),
    ],
)
def test_exclude_patterns(tmp_path, pattern, path, is_dir, excluded):
    excluder = files.Excluder([pattern], tmp_path)
    assert excluder.excluded(tmp_path / path, is_dir) is excluded


def test_default_exclusions_are_folders_only(tmp_path):
    excluder = files.Excluder([], tmp_path)
    assert excluder.excluded(tmp_path / "build", True)
    assert excluder.excluded(tmp_path / "x.egg-info", True)
    assert not excluder.excluded(tmp_path / "build.py", False)
    (tmp_path / "env").mkdir()
    assert not excluder.excluded(tmp_path / "env", True)
    (tmp_path / "env" / "pyvenv.cfg").write_text("")
    assert excluder.excluded(tmp_path / "env", True)


def test_discover_is_sorted_and_deduplicated(tmp_path):
    for name in ["b.py", "a.py", "sub/c.py", "sub/a.txt", "A/z.py"]:
        put(tmp_path / name, b"")
    found = files.discover([".", "a.py"], files.Excluder([], tmp_path))
    assert found.files == ["a.py", "b.py", "A/z.py", "sub/c.py"]  # a folder's files, then its folders
    assert found.errors == []
    assert files.discover(["missing"], files.Excluder()).errors == ["missing: No such file or directory"]


def test_force_exclude_checks_ancestors_inside_the_project(tmp_path):
    excluder = files.Excluder(["generated"], tmp_path)
    put(tmp_path / "generated" / "deep" / "a.py", b"")
    assert excluder.excluded_with_ancestors(tmp_path / "generated" / "deep" / "a.py")
    assert not excluder.excluded_with_ancestors(tmp_path / "a.py")
