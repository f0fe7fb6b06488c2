"""Count the question screening's false alarms and misses on real LLM-style questions (makd/llm/screening_eval.py).

python tools/eval_screening.py                              # the hand-labelled set in tests/data/real_questions
python tools/eval_screening.py --lavid /path/to/lavid.git   # also LaViD's LLM-written questions (a git mirror)
"""

import argparse
import logging
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run from a checkout without installing

from makd.llm.screening_eval import lavid_items, lavid_question_files, read_labelled, refused_files, score  # noqa: E402


def _report(name: str, result: dict, show: int) -> None:
    c = result["counts"]
    print(
        f"{name}: ok {c.get('ok', 0)} (false alarms {c.get('false_alarms', 0)}), leak {c.get('leak', 0)} "
        f"(missed {c.get('missed_leak', 0)}), bad {c.get('bad', 0)} (missed {c.get('missed_bad', 0)})"
    )
    for item, reason in result["errors"][:show]:
        print(f"  {item.label:>4} {item.source}: {item.question!r} -> {reason or 'kept'}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--labelled", default=str(REPO / "tests" / "data" / "real_questions"))
    parser.add_argument("--classes", default=str(REPO / "questions" / "classes"), help="class lists by file name")
    parser.add_argument("--lavid", help="git directory of a LaViD mirror (github.com/lliangthomas/lavid)")
    parser.add_argument("--show", type=int, default=10, help="errors listed per set")
    args = parser.parse_args(argv)
    logging.getLogger("makd").setLevel(logging.ERROR)  # the reader's whitespace warnings are expected here
    _report("labelled", score(read_labelled(args.labelled, args.classes)), args.show)
    if args.lavid:
        files = lavid_question_files(args.lavid)
        _report("lavid", score(lavid_items(args.lavid, files)), args.show)
        refused, tried = refused_files(files)
        print(f"lavid question files refused by the questions-file reader: {refused} of {tried}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
