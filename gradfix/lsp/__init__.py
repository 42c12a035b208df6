"""``gradfix lsp``: a Language Server Protocol server on the same engine as the CLI.

Modules: :mod:`.text` (LSP lines, position encodings, minimal edits),
:mod:`.noqa` (adding ``# noqa`` comments), :mod:`.settings` (project and editor
settings), :mod:`.analysis` (linting and fixing a buffer), :mod:`.server` (pygls).
Only :mod:`.server` imports pygls.
"""
