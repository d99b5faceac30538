"""Contrastive datasets: pairs of prompts that differ in one concept.

The shipped concepts are JSONL files in `concepts/` (how they were built:
concepts/README.md); a user's own file has the same format, one
``{"positive": "...", "negative": "..."}`` object per line.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

CONCEPTS_DIR = Path(__file__).resolve().parent / "concepts"
CONCEPTS = (
    "honesty",
    "creativity",
    "confidence",
    "helpfulness",
    "formality",
    "verbosity",
    "enthusiasm",
    "empathy",
)


@dataclass(frozen=True)
class ContrastPair:
    positive: str
    negative: str


@dataclass(frozen=True)
class ContrastDataset:
    name: str
    pairs: list[ContrastPair]
    sha256: str  # of the file's bytes: which data a vector was trained on

    def head(self, max_samples: int | None) -> ContrastDataset:
        """The first `max_samples` pairs (all when None)."""
        if max_samples is None:
            return self
        if max_samples < 1:
            raise ValueError(f"max_samples must be at least 1, not {max_samples}")
        return ContrastDataset(self.name, self.pairs[:max_samples], self.sha256)


def load_pairs_file(path: str | Path, name: str | None = None) -> ContrastDataset:
    """Pairs from a JSONL file of {"positive", "negative"} objects; ValueError naming the
    line of anything else."""
    path = Path(path)
    data = path.read_bytes()
    pairs = []
    for number, line in enumerate(data.decode("utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except json.JSONDecodeError as error:
            raise ValueError(f"{path}:{number}: not JSON ({error.msg})") from None
        if not isinstance(item, dict) or not all(
            isinstance(item.get(key), str) and item[key].strip() for key in ("positive", "negative")
        ):
            raise ValueError(
                f'{path}:{number}: expected {{"positive": "...", "negative": "..."}} with '
                "non-empty strings"
            )
        pairs.append(ContrastPair(item["positive"], item["negative"]))
    if not pairs:
        raise ValueError(f"{path} holds no pairs")
    return ContrastDataset(name or path.stem, pairs, hashlib.sha256(data).hexdigest())


def load_concept(name: str) -> ContrastDataset:
    """One of the shipped concepts (`CONCEPTS`)."""
    if name not in CONCEPTS:
        raise ValueError(f"unknown concept {name!r}; available: {', '.join(CONCEPTS)}")
    return load_pairs_file(CONCEPTS_DIR / f"{name}.jsonl", name)
