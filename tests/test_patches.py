"""``fix --diff`` and ``apply``: diffs that git apply, patch -p1 and gradfix apply all agree on."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from typer.testing import CliRunner
from unidiff import PatchSet

from gradfix import patches
from gradfix.cli import app

SAFE = "import torch\nx = torch.zeros(3)\ny = torch.sigmoid(x)\ny += 1\n"
SAFE_FIXED = "import torch\nx = torch.zeros(3)\ny = torch.sigmoid(x)\ny = y + 1\n"
UNSAFE = "import torch\ndef f(h: torch.Tensor):\n    h += 1\n    return h\n"
FILLER = "".join(f"z{i} = {i}\n" for i in range(12))

# One of each kind of file whose bytes a careless diff would get wrong.
TREE: dict[str, bytes] = {
    "plain.py": SAFE.encode(),
    "two_hunks.py": (SAFE + FILLER + "y *= 2\n").encode(),
    "crlf.py": SAFE.replace("\n", "\r\n").encode(),
    "bom.py": b"\xef\xbb\xbf" + SAFE.encode(),
    "latin1.py": ("# -*- coding: latin-1 -*-\n# caf\u00e9\n" + SAFE.replace("y += 1", "y += 1  # \u00e9t\u00e9")).encode("latin-1"),
    "no_newline.py": SAFE.rstrip("\n").encode(),
    "form_feed.py": ("import torch\n\x0c\n" + SAFE[13:]).encode(),
    "sub/dir/nested.py": SAFE.encode(),
    "with space.py": SAFE.encode(),
    "unsafe_only.py": UNSAFE.encode(),
    "clean.py": b"import torch\n",
}


def run(*args: object, input: bytes | None = None):
    return CliRunner().invoke(app, [str(a) for a in args], input=input, catch_exceptions=False)


@pytest.fixture(autouse=True)
def in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)


def make_tree(root: Path, tree: dict[str, bytes] = TREE) -> Path:
    for name, data in tree.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return root


def snapshot(root: Path) -> dict[str, bytes]:
    """Every file's bytes, the result cache (.gradfix_cache) aside."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and ".gradfix_cache" not in p.relative_to(root).parts}


@pytest.fixture(scope="module")
def diff_and_fixed(tmp_path_factory):
    """(patch bytes made in work/, the tree `gradfix fix` gives in fixed/); built once."""
    root = tmp_path_factory.mktemp("reference")
    with pytest.MonkeyPatch.context() as monkeypatch:
        work = make_tree(root / "work")
        monkeypatch.chdir(work)
        result = run("fix", "--diff", ".")
        assert result.exit_code == 1, result.stderr
        assert snapshot(work) == TREE
        fixed = make_tree(root / "fixed")
        monkeypatch.chdir(fixed)
        assert run("fix", ".").exit_code == 1  # unsafe_only.py remains
    return result.stdout_bytes, snapshot(fixed)


# --- fix --diff --------------------------------------------------------------------------------


def test_diff_writes_nothing_and_exits_1(tmp_path):
    make_tree(tmp_path)
    before = snapshot(tmp_path)
    mtimes = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*.py")}
    result = run("fix", "--diff", ".")
    assert result.exit_code == 1
    assert snapshot(tmp_path) == before
    assert {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*.py")} == mtimes
    assert result.stderr.strip().endswith("Would fix 10 findings in 9 files.")


def test_diff_without_changes_is_empty_and_exits_0(tmp_path):
    make_tree(tmp_path, {"clean.py": b"import torch\n", "unsafe_only.py": UNSAFE.encode()})
    result = run("fix", "--diff", ".")
    assert result.exit_code == 0
    assert result.stdout_bytes == b""


def test_diff_parses_with_unidiff(diff_and_fixed):
    diff, _ = diff_and_fixed
    patch_set = PatchSet(diff.decode("latin-1"))
    changed = sorted(name for name in TREE if name not in ("clean.py", "unsafe_only.py"))
    assert sorted(f.path for f in patch_set) == changed
    for patched in patch_set:
        assert patched.source_file == "a/" + patched.path and patched.target_file == "b/" + patched.path
        assert all(hunk.is_valid() for hunk in patched)
        assert patched.added == patched.removed == (2 if patched.path == "two_hunks.py" else 1)


def test_diff_keeps_each_files_bytes(diff_and_fixed):
    diff, _ = diff_and_fixed
    assert b"-y += 1\r\n+y = y + 1\r\n" in diff  # CRLF kept
    assert b"+y = y + 1  # \xe9t\xe9\n" in diff  # latin-1 bytes, not UTF-8
    assert b"-y += 1\n\\ No newline at end of file\n+y = y + 1\n\\ No newline at end of file\n" in diff
    assert b"--- a/with space.py\t\n" in diff  # the tab GNU patch needs
    assert b" \xef\xbb\xbfimport torch\n" in diff  # the BOM is part of line 1


@pytest.mark.parametrize("tool", ["git", "patch", "gradfix"])
def test_applying_the_diff_equals_fixing(tmp_path, monkeypatch, diff_and_fixed, tool):
    diff, fixed = diff_and_fixed
    if tool != "gradfix" and shutil.which(tool) is None:
        pytest.skip(f"`{tool}` is not installed")
    target = make_tree(tmp_path / f"by-{tool}")
    (tmp_path / "fix.diff").write_bytes(diff)
    monkeypatch.chdir(target)
    if tool == "git":
        done = subprocess.run(["git", "apply", "--whitespace=nowarn", str(tmp_path / "fix.diff")], capture_output=True)
        assert done.returncode == 0, done.stderr
    elif tool == "patch":
        done = subprocess.run(["patch", "-p1", "--batch", "-i", str(tmp_path / "fix.diff")], capture_output=True)
        assert done.returncode == 0, done.stdout + done.stderr
    else:
        result = run("apply", tmp_path / "fix.diff")
        assert result.exit_code == 0, result.stderr
        assert "Patched two_hunks.py (2 hunks)" in result.stdout
    assert snapshot(target) == fixed


def test_diff_for_a_file_outside_the_cwd_warns(tmp_path, monkeypatch):
    make_tree(tmp_path, {"a.py": SAFE.encode()})
    (tmp_path / "sub").mkdir()
    monkeypatch.chdir(tmp_path / "sub")
    result = run("fix", "--diff", "../a.py")
    assert result.exit_code == 1
    assert result.stdout_bytes.startswith(b"--- a/../a.py\n")
    assert "outside the current directory" in result.stderr


# --- apply --------------------------------------------------------------------------------------


def _diff(tmp_path: Path, tree: dict[str, bytes]) -> bytes:
    make_tree(tmp_path, tree)
    result = run("fix", "--diff", ".")
    assert result.exit_code == 1
    return result.stdout_bytes


def test_apply_refuses_a_stale_file_and_applies_the_others(tmp_path):
    diff = _diff(tmp_path, {"a.py": SAFE.encode(), "b.py": SAFE.encode()})
    stale = SAFE.replace("torch.sigmoid(x)", "torch.tanh(x)").encode()  # a context line changed
    (tmp_path / "a.py").write_bytes(stale)
    (tmp_path / "p.diff").write_bytes(diff)
    result = run("apply", "p.diff")
    assert result.exit_code == 1
    assert (tmp_path / "a.py").read_bytes() == stale
    assert (tmp_path / "b.py").read_text() == SAFE_FIXED
    assert result.stderr.startswith("a.py: patch does not apply: hunk 1 (@@ -1,4 +1,4 @@) does not match")
    assert "b.py" not in result.stderr
    assert "Patched b.py (1 hunk)" in result.stdout


def test_apply_is_all_or_nothing_per_file(tmp_path):
    source = SAFE + FILLER + "y *= 2\n"
    diff = _diff(tmp_path, {"a.py": source.encode()})
    assert diff.count(b"\n@@ ") == 2
    stale = source.replace("y *= 2", "y *= 3")  # only the second hunk is stale
    (tmp_path / "a.py").write_text(stale)
    result = run("apply", "-", input=diff)
    assert result.exit_code == 1
    assert "hunk 2" in result.stderr
    assert (tmp_path / "a.py").read_text() == stale


def test_apply_twice_says_already_applied(tmp_path):
    diff = _diff(tmp_path, {"a.py": SAFE.encode()})
    assert run("apply", "-", input=diff).exit_code == 0
    result = run("apply", "-", input=diff)
    assert result.exit_code == 1
    assert "looks already applied" in result.stderr
    assert (tmp_path / "a.py").read_text() == SAFE_FIXED


def test_apply_finds_a_shifted_hunk(tmp_path):
    diff = _diff(tmp_path, {"a.py": (SAFE + FILLER + "y *= 2\n").encode()})
    shifted = "# a header comment\n# added after the diff\n" + SAFE + FILLER + "y *= 2\n"
    (tmp_path / "a.py").write_text(shifted)
    result = run("apply", "-", input=diff)
    assert result.exit_code == 0, result.stderr
    assert (tmp_path / "a.py").read_text() == shifted.replace("y += 1", "y = y + 1").replace("y *= 2", "y = y * 2")


def test_apply_a_hand_edited_patch(tmp_path):
    diff = _diff(tmp_path, {"a.py": (SAFE + FILLER + "y *= 2\n").encode()})
    header, first, second = diff.split(b"\n@@ ")
    edited = header + b"\n@@ " + first.replace(b"+y = y + 1", b"+y = 1 + y") + b"\n"  # second hunk dropped
    result = run("apply", "-", input=edited)
    assert result.exit_code == 0, result.stderr
    assert (tmp_path / "a.py").read_text() == SAFE.replace("y += 1", "y = 1 + y") + FILLER + "y *= 2\n"


def test_apply_a_patch_resaved_with_lf_keeps_crlf(tmp_path):
    diff = _diff(tmp_path, {"a.py": SAFE.replace("\n", "\r\n").encode()})
    result = run("apply", "-", input=diff.replace(b"\r\n", b"\n"))
    assert result.exit_code == 0, result.stderr
    assert (tmp_path / "a.py").read_bytes() == SAFE_FIXED.replace("\n", "\r\n").encode()


def test_apply_a_patch_without_the_bom_keeps_the_bom(tmp_path):
    diff = _diff(tmp_path, {"a.py": b"\xef\xbb\xbf" + SAFE.encode()})
    result = run("apply", "-", input=diff.replace(b"\xef\xbb\xbf", b""))
    assert result.exit_code == 0, result.stderr
    assert (tmp_path / "a.py").read_bytes() == b"\xef\xbb\xbf" + SAFE_FIXED.encode()


def test_apply_keeps_permissions(tmp_path):
    diff = _diff(tmp_path, {"a.py": SAFE.encode()})
    (tmp_path / "a.py").chmod(0o751)
    assert run("apply", "-", input=diff).exit_code == 0
    assert (tmp_path / "a.py").stat().st_mode & 0o7777 == 0o751


def test_apply_refuses_a_result_that_would_not_decode(tmp_path):
    diff = _diff(tmp_path, {"a.py": SAFE.encode()})
    result = run("apply", "-", input=diff.replace(b"+y = y + 1", b"+y = y + 1  # \xe9"))  # latin-1 byte in UTF-8
    assert result.exit_code == 1
    assert "would not decode" in result.stderr
    assert (tmp_path / "a.py").read_text() == SAFE


@pytest.mark.parametrize(
    "patch",
    [
        b"this is not a patch\n",
        b"--- a/a.py\n+++ b/a.py\n@@ -1,4 +1,4 @@\n import torch\n-y += 1\n",  # hunk shorter than its header
        b"@@ -1,1 +1,1 @@\n-a\n+b\n",  # a hunk without file headers
        b"--- a/a.py\n+++ b/c.py\n@@ -1 +1 @@\n-a\n+b\n",  # a rename
        b"--- /dev/null\n+++ b/new.py\n@@ -0,0 +1 @@\n+a\n",  # a new file
    ],
)
def test_malformed_or_unsupported_patch_exits_2_and_changes_nothing(tmp_path, patch):
    (tmp_path / "a.py").write_text(SAFE)
    (tmp_path / "p.diff").write_bytes(patch)
    result = run("apply", "p.diff")
    assert result.exit_code == 2
    assert result.stderr.startswith("error: p.diff: ")
    assert (tmp_path / "a.py").read_text() == SAFE
    assert not (tmp_path / "new.py").exists()


def test_apply_missing_file_exits_2_others_applied(tmp_path):
    diff = _diff(tmp_path, {"a.py": SAFE.encode(), "b.py": SAFE.encode()})
    (tmp_path / "a.py").unlink()
    result = run("apply", "-", input=diff)
    assert result.exit_code == 2
    assert "a.py: No such file or directory" in result.stderr
    assert (tmp_path / "b.py").read_text() == SAFE_FIXED


def test_apply_missing_patch_file_exits_2():
    result = run("apply", "nope.diff")
    assert result.exit_code == 2
    assert "nope.diff: No such file or directory" in result.stderr


def test_apply_empty_patch_is_a_no_op():
    result = run("apply", "-", input=b"")
    assert result.exit_code == 0
    assert "Nothing to apply" in result.stdout


# --- the diff machinery directly --------------------------------------------------------------------


@pytest.mark.parametrize(
    "old, new",
    [
        (b"a\nb\nc\n", b"a\nB\nc\n"),
        (b"a\nb", b"a\nb\n"),  # a newline added at the end
        (b"a\nb\n", b"a\nb"),  # and removed
        (b"", b"x\n"),
        (b"x\n", b""),
        (b"a\r\nb\r\n", b"a\r\nb\r\nc\r\n"),
        (b"\xef\xbb\xbfa\nb\n", b"\xef\xbb\xbfA\nb\n"),
        (b"".join(b"%d\n" % i for i in range(100)), b"".join(b"%d\n" % (i if i % 20 else -i) for i in range(100))),
        (b"a\x0cb\nc\x85d\n", b"a\x0cb\nC\x85d\n"),  # only \n separates lines
    ],
)
def test_unified_diff_round_trips(old, new):
    diff = patches.unified_diff("d/f.py", old, new)
    [file_patch] = patches.parse_patch(diff)
    assert file_patch.path == "d/f.py"
    assert patches.apply_hunks(old, file_patch.hunks) == new


def test_unified_diff_of_equal_bytes_is_empty():
    assert patches.unified_diff("f.py", b"a\n", b"a\n") == b""


def test_header_names_are_quoted_like_git():
    diff = patches.unified_diff('we"ird\tname.py', b"a\n", b"b\n")
    assert diff.startswith(b'--- "a/we\\"ird\\tname.py"\n+++ "b/we\\"ird\\tname.py"\n')
    assert patches.parse_patch(diff)[0].path == 'we"ird\tname.py'


def test_apply_hunks_without_fuzz():
    old = b"a\nb\nc\nd\n"
    diff = patches.unified_diff("f", old, b"a\nb\nC\nd\n")
    hunks = patches.parse_patch(diff)[0].hunks
    with pytest.raises(patches.HunkMismatch):
        patches.apply_hunks(b"a\nB\nc\nd\n", hunks)  # one context line differs: refused, no fuzz
    with pytest.raises(patches.HunkMismatch):
        patches.apply_hunks(b"a \nb\nc\nd\n", hunks)  # trailing whitespace counts
