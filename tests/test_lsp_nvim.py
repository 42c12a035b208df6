"""A real editor: headless Neovim opens a file, waits for gradfix's diagnostics and applies the quick fix.

Skipped when `nvim` is not installed (`apt-get install neovim`); written for
Neovim 0.7 and later (only APIs that exist from 0.7 through 0.11 are used).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

from gradfix.codemods import Level, check_source, fix_source

NVIM = shutil.which("nvim")
pytestmark = pytest.mark.skipif(NVIM is None, reason="nvim is not installed")

SOURCE = '''import torch


def squash(x):
    t = torch.tanh(x)
    note = "naïve 😀"; t.mul_(0.5)
    return t
'''

SCRIPT = r'''
local file, python, out = vim.env.GRADFIX_FILE, vim.env.GRADFIX_PYTHON, vim.env.GRADFIX_REPORT
local function finish(status, detail)
  local f = io.open(out, "w")
  f:write(status .. "\n" .. (detail or "") .. "\n")
  f:close()
  vim.cmd("qa!")
end
vim.cmd("edit " .. vim.fn.fnameescape(file))
local bufnr = vim.api.nvim_get_current_buf()
local config = { name = "gradfix", cmd = { python, "-m", "gradfix", "lsp" }, root_dir = vim.fn.fnamemodify(file, ":h") }
local id = vim.lsp.start_client(config)
vim.lsp.buf_attach_client(bufnr, id)
if not vim.wait(30000, function() return #vim.diagnostic.get(bufnr) > 0 end, 50) then
  return finish("NO_DIAGNOSTICS")
end
local diag = vim.diagnostic.get(bufnr)[1]
local params = {
  textDocument = { uri = vim.uri_from_bufnr(bufnr) },
  range = { start = { line = diag.lnum, character = 0 }, ["end"] = { line = diag.lnum + 1, character = 0 } },
  context = { diagnostics = {} },
}
local responses = vim.lsp.buf_request_sync(bufnr, "textDocument/codeAction", params, 30000) or {}
local chosen
for _, response in pairs(responses) do
  for _, action in ipairs(response.result or {}) do
    if action.isPreferred then chosen = action end
  end
end
if not chosen then return finish("NO_PREFERRED_FIX", vim.inspect(responses)) end
if not chosen.edit then
  local resolved = vim.lsp.buf_request_sync(bufnr, "codeAction/resolve", chosen, 30000) or {}
  for _, response in pairs(resolved) do
    if response.result then chosen = response.result end
  end
end
if not chosen.edit then return finish("NO_EDIT", vim.inspect(chosen)) end
vim.lsp.util.apply_workspace_edit(chosen.edit, vim.lsp.get_client_by_id(id).offset_encoding)
vim.cmd("silent write")
finish("OK", (diag.code or "") .. "|" .. chosen.title)
'''


def test_neovim_applies_the_quick_fix(tmp_path):
    path = tmp_path / "squash.py"
    path.write_text(SOURCE, encoding="utf-8")
    script = tmp_path / "gradfix_test.lua"
    script.write_text(SCRIPT, encoding="utf-8")
    report = tmp_path / "report.txt"
    env = {**os.environ, "GRADFIX_FILE": str(path), "GRADFIX_PYTHON": sys.executable, "GRADFIX_REPORT": str(report)}
    subprocess.run(
        [NVIM, "--headless", "--clean", "-n", "-c", f"luafile {script}"],
        env=env, cwd=tmp_path, timeout=90, stdin=subprocess.DEVNULL, capture_output=True,
    )
    assert report.exists(), "Neovim did not finish the script"
    status, detail = report.read_text(encoding="utf-8").split("\n", 1)
    assert status == "OK", detail
    (finding,) = check_source(SOURCE, str(path))
    assert detail.strip() == f"{finding.code}|{finding.fix_title}"
    assert path.read_text(encoding="utf-8") == fix_source(SOURCE, str(path), level=Level.WARNING).source
