// A minimal VS Code client for `gradfix lsp`: everything else (diagnostics, quick fixes,
// "Disable ... for this line", source.fixAll.gradfix) comes from the server.
const vscode = require("vscode");
const { LanguageClient } = require("vscode-languageclient/node");

const KEYS = ["select", "ignore", "unsafeFixes", "level", "fixLevel", "docsBaseUrl"];
let client;

function settings() {
  const config = vscode.workspace.getConfiguration("gradfix");
  const result = {};
  for (const key of KEYS) {
    const value = config.get(key);
    if (value !== null && value !== undefined) {
      result[key] = value;
    }
  }
  return result;
}

async function activate(context) {
  const command = vscode.workspace.getConfiguration("gradfix").get("command") || ["gradfix", "lsp"];
  const serverOptions = { command: command[0], args: command.slice(1) };
  const clientOptions = {
    documentSelector: [
      { scheme: "file", language: "python" },
      { scheme: "untitled", language: "python" },
    ],
    initializationOptions: settings(),
    // Sends workspace/didChangeConfiguration with the `gradfix` section when it changes.
    synchronize: { configurationSection: "gradfix" },
  };
  client = new LanguageClient("gradfix", "gradfix", serverOptions, clientOptions);
  context.subscriptions.push({ dispose: () => client && client.stop() });
  await client.start();
}

function deactivate() {
  return client ? client.stop() : undefined;
}

module.exports = { activate, deactivate };
