"""Write docs/rules.md from the rule classes: python scripts/generate_rule_docs.py"""

from pathlib import Path

from gradfix.codemods.docs import render_all

if __name__ == "__main__":
    target = Path(__file__).resolve().parent.parent / "docs" / "rules.md"
    target.parent.mkdir(exist_ok=True)
    target.write_text(render_all(), encoding="utf-8")
    print(f"wrote {target}")
