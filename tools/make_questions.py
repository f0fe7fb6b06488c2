"""Stage 1 of MaKD: ask an LLM for N yes/no aspect questions about the classes and keep the Q best.

    python tools/make_questions.py --classes questions/classes/oxford_pets.txt --num-images 3680 \
        --n 100 --q 50 --model gpt-4o --out questions/oxford_pets_gpt4o.txt --cache .cache/llm

See docs/stage1.md; the work is done by makd.llm.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from makd.commands.make_questions import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
