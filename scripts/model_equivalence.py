"""Does `gradfix fix` (default settings) change anything real models can notice?

    python scripts/model_equivalence.py [--jobs N] [--json OUT]

1. Runs gradfix's engine over the installed torch's `torch/nn` and over the
   `transformers` package's files that the chosen models use, and reports
   findings per rule and level, and the edits a default `gradfix fix` makes
   (in memory: nothing on disk is written).
2. Builds each model from a small config (nothing downloaded), runs forward and
   backward on fixed inputs twice, once with the original library sources and
   once with the fixed sources served through an import hook installed before
   `import torch`, and compares every output and every gradient bit for bit.

Needs `transformers` (pinned in the Makefile's `models` target). Exit 1 if any
model differs or fails.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from functools import partial
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# Each model: how to build it and a loss from fixed inputs. Run inside a child process.
MODELS = {
    "nn.Transformer": """
model = torch.nn.Transformer(d_model=16, nhead=2, num_encoder_layers=2, num_decoder_layers=2, dim_feedforward=32, dropout=0.0)
out = model(torch.randn(5, 2, 16), torch.randn(4, 2, 16))
""",
    "nn.TransformerEncoderLayer": """
model = torch.nn.TransformerEncoderLayer(d_model=16, nhead=4, dim_feedforward=24, dropout=0.1, batch_first=True)
out = model(torch.randn(2, 6, 16))
""",
    "nn.LSTM": """
model = torch.nn.LSTM(8, 12, num_layers=2, bidirectional=True)
out = model(torch.randn(7, 3, 8))[0]
""",
    "nn.GRU": """
model = torch.nn.GRU(8, 12, num_layers=2, dropout=0.2)
out, h = model(torch.randn(7, 3, 8))
out = out.sum() + h.sum()
""",
    "nn.MultiheadAttention": """
model = torch.nn.MultiheadAttention(16, 4, dropout=0.1)
q = torch.randn(5, 2, 16)
out = model(q, q, q, need_weights=True)[0]
""",
    "ResNet-like block (nn.Sequential, ReLU(inplace=True))": """
model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.BatchNorm2d(8), torch.nn.ReLU(inplace=True),
                            torch.nn.Conv2d(8, 8, 3, padding=1), torch.nn.BatchNorm2d(8), torch.nn.ReLU(inplace=True),
                            torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(8, 4))
out = model(torch.randn(2, 3, 8, 8))
""",
    "transformers BertModel": """
from transformers import BertConfig, BertModel
model = BertModel(BertConfig(vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37))
out = model(input_ids=torch.randint(0, 99, (2, 7))).last_hidden_state
""",
    "transformers GPT2LMHeadModel": """
from transformers import GPT2Config, GPT2LMHeadModel
model = GPT2LMHeadModel(GPT2Config(vocab_size=99, n_embd=32, n_layer=2, n_head=4, n_positions=32))
ids = torch.randint(0, 99, (2, 7))
out = model(input_ids=ids, labels=ids).loss
""",
    "transformers LlamaForCausalLM": """
from transformers import LlamaConfig, LlamaForCausalLM
model = LlamaForCausalLM(LlamaConfig(vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                     num_key_value_heads=2, intermediate_size=37, max_position_embeddings=64))
ids = torch.randint(0, 99, (2, 7))
out = model(input_ids=ids, labels=ids).loss
""",
    "transformers T5ForConditionalGeneration": """
from transformers import T5Config, T5ForConditionalGeneration
model = T5ForConditionalGeneration(T5Config(vocab_size=99, d_model=32, d_kv=8, d_ff=37, num_layers=2, num_heads=4,
                                                          decoder_start_token_id=0, pad_token_id=0))
ids = torch.randint(0, 99, (2, 7))
out = model(input_ids=ids, labels=ids).loss
""",
    "transformers DistilBertModel": """
from transformers import DistilBertConfig, DistilBertModel
model = DistilBertModel(DistilBertConfig(vocab_size=99, dim=32, n_layers=2, n_heads=4, hidden_dim=37))
out = model(input_ids=torch.randint(0, 99, (2, 7))).last_hidden_state
""",
    "transformers MistralModel": """
from transformers import MistralConfig, MistralModel
model = MistralModel(MistralConfig(vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                   num_key_value_heads=2, intermediate_size=37))
out = model(input_ids=torch.randint(0, 99, (2, 7))).last_hidden_state
""",
}
# The control: the same comparison with a tiny deliberate change to a library file must say
# DIFFERENT, or the fixed sources never reached the model and "identical" would mean nothing.
CONTROL_MODEL = "nn.Transformer"
CONTROL_FILE = "nn/modules/linear.py"
CONTROL_EDIT = ("return F.linear(input, self.weight, self.bias)", "return F.linear(input, self.weight, self.bias) * (1 + 2**-20)")

TRANSFORMERS_ARCHITECTURES = ("bert", "gpt2", "llama", "t5", "distilbert", "mistral")

DRIVER = """
import sys, torch
torch.manual_seed(0)
torch.use_deterministic_algorithms(True)
{body}
loss = out if out.dim() == 0 else (out * torch.linspace(-1, 1, out.numel()).reshape(out.shape)).sum()
loss.backward()
grads = {{name: p.grad for name, p in model.named_parameters() if p.grad is not None}}
torch.save({{"out": out.detach(), "loss": loss.detach(), "grads": grads}}, sys.argv[1])
"""

BOOT = """
import runpy, sys, json
sys.path.insert(0, {verify_dir!r})
from source_overrides import install  # standard library only: installed before torch loads
with open({overrides!r}) as handle:
    install(json.load(handle))
sys.argv = [{driver!r}, {out!r}]
runpy.run_path({driver!r}, run_name="__main__")
"""


def _fix(path: str, all_fixes: bool = False) -> dict:
    from gradfix.codemods import Level, check_source, fix_source

    source = Path(path).read_text(encoding="utf-8")
    findings = check_source(source, path)
    if all_fixes:
        result = fix_source(source, path, unsafe_fixes=True, level=Level.WARNING)
    else:
        result = fix_source(source, path)
    return {
        "path": path,
        "findings": [(f.code, f.level.value, f.fix_safety.value) for f in findings],
        "applied": result.applied,
        "fixed": result.source if result.source != source else None,
    }


def library_files() -> list[str]:
    import importlib.util

    torch_dir = Path(importlib.util.find_spec("torch").origin).parent
    files = sorted(str(p) for p in (torch_dir / "nn").rglob("*.py"))
    spec = importlib.util.find_spec("transformers")
    if spec is not None:
        tf = Path(spec.origin).parent
        files += sorted(str(p) for p in tf.glob("*.py") if p.name.startswith(("modeling_", "activations", "pytorch_utils")))
        for arch in TRANSFORMERS_ARCHITECTURES:
            files += sorted(str(p) for p in (tf / "models" / arch).glob("modeling_*.py"))
    return files


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--json", dest="json_out")
    parser.add_argument("--all-fixes", action="store_true",
                        help="apply every fix (--unsafe-fixes --level warning) instead of the default ones: a stress test")
    args = parser.parse_args()

    files = library_files()
    started = time.perf_counter()
    with ProcessPoolExecutor(args.jobs) as pool:
        results = list(pool.map(partial(_fix, all_fixes=args.all_fixes), files, chunksize=2))
    print(f"gradfix over {len(files)} library files in {time.perf_counter() - started:.0f} s")
    by_rule = collections.Counter()
    edits = collections.Counter()
    for result in results:
        group = "transformers" if "/transformers/" in result["path"] else "torch/nn"
        for code, level, safety in result["findings"]:
            by_rule[(group, code, level)] += 1
        for code, count in result["applied"].items():
            edits[(group, code)] += count
    print("\nfindings (library, rule, level):")
    for (group, code, level), count in sorted(by_rule.items()):
        print(f"  {group:<13} {code}  {level:<8} {count:>4}")
    mode = "`gradfix fix --unsafe-fixes --level warning`" if args.all_fixes else "default `gradfix fix`"
    print(f"edits made by {mode}: " + (", ".join(f"{g} {c} x{n}" for (g, c), n in sorted(edits.items())) or "none"))
    overrides = {r["path"]: r["fixed"] for r in results if r["fixed"] is not None}

    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        overrides_file = Path(scratch) / "overrides.json"
        overrides_file.write_text(json.dumps(overrides))
        env = dict(os.environ, CUBLAS_WORKSPACE_CONFIG=":4096:8", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
        for name, body in MODELS.items():
            if "transformers" in name and not any("/transformers/" in f for f in files):
                rows.append((name, "skipped: transformers is not installed"))
                continue
            rows.append((name, _run_pair(name, body, overrides_file, Path(scratch), env)))
        control_file = Path(scratch) / "control.json"
        control_file.write_text(json.dumps({**overrides, **_control_override(files, overrides)}))
        control = _run_pair(CONTROL_MODEL, MODELS[CONTROL_MODEL], control_file, Path(scratch), env)
    print("\nmodels, original vs fixed library sources (forward and backward, bit for bit):")
    for name, verdict in rows:
        print(f"  {name:<52} {verdict}")
    print(f"control: {CONTROL_MODEL} with {CONTROL_FILE} changed on purpose: {control}")
    if not control.startswith("DIFFERENT"):
        print("the control was not noticed: the fixed sources did not reach the models", file=sys.stderr)
        return 1
    if args.json_out:
        Path(args.json_out).write_text(json.dumps({"rows": rows, "edits": {f"{g} {c}": n for (g, c), n in edits.items()}}))
    return 0 if all(v.startswith(("identical", "skipped")) for _, v in rows) else 1


def _run_pair(name: str, body: str, overrides_file: Path, scratch: Path, env: dict) -> str:
    """Run one model with the original and with the overridden library sources; compare."""
    driver = scratch / "driver.py"
    driver.write_text(DRIVER.format(body=body.strip()))
    original, fixed = scratch / "original.pt", scratch / "fixed.pt"
    first = subprocess.run([sys.executable, str(driver), str(original)], capture_output=True, text=True, env=env)
    boot = BOOT.format(verify_dir=str(ROOT / "verify"), overrides=str(overrides_file), driver=str(driver), out=str(fixed))
    second = subprocess.run([sys.executable, "-c", boot], capture_output=True, text=True, env=env)
    if first.returncode or second.returncode:
        return "FAILED to run: " + (first.stderr or second.stderr).strip().splitlines()[-1]
    return _compare(original, fixed)


def _control_override(files: list[str], overrides: dict) -> dict:
    path = next(f for f in files if f.endswith(CONTROL_FILE))
    text = overrides.get(path) or Path(path).read_text(encoding="utf-8")
    old, new = CONTROL_EDIT
    if old not in text:
        raise SystemExit(f"{path}: the control edit's text is not in the file (torch changed?)")
    return {path: text.replace(old, new)}


def _compare(original: Path, fixed: Path) -> str:
    import torch

    a = torch.load(original, weights_only=False)
    b = torch.load(fixed, weights_only=False)
    if not torch.equal(a["out"], b["out"]):
        return "DIFFERENT outputs"
    if a["grads"].keys() != b["grads"].keys():
        return "DIFFERENT set of parameters with gradients"
    different = [k for k in a["grads"] if not torch.equal(a["grads"][k], b["grads"][k])]
    if different:
        return f"DIFFERENT gradients: {', '.join(different[:3])}"
    return f"identical (output and {len(a['grads'])} gradients)"


if __name__ == "__main__":
    raise SystemExit(main())
