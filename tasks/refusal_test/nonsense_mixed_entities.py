"""HalluLens' nonsense mixed entities refusal test, at the path HalluLens' users run it from.

    python tasks/refusal_test/nonsense_mixed_entities.py --do_generate_prompt --do_inference \\
        --do_eval --N 50 --seed 1 --exp nonsense_all

A shim: the benchmark lives in `actlog.hallulens` (also `actlog hallulens ...`, same flags).
"""

import sys
from pathlib import Path

# Run as a script from a checkout, the repository root is not on the path.
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from actlog.hallulens.nonsense_mixed_entities import main, parse_args  # noqa: E402

__all__ = ["main", "parse_args"]

if __name__ == "__main__":
    sys.exit(main())
