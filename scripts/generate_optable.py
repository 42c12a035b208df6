"""Regenerate gradfix's table of in-place tensor methods from the installed torch.

    python scripts/generate_optable.py --write    # rewrite codemods/data/inplace_methods.json
    python scripts/generate_optable.py --check    # exit 1 if the committed table is stale
"""

from gradfix.codemods.optable import main

if __name__ == "__main__":
    raise SystemExit(main())
