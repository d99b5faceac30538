"""The shipped concept datasets: well-formed contrastive pairs, and exactly what build.py writes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from actlog.repe.concepts import build
from actlog.repe.pairs import CONCEPTS

# The original tool's guide: "Available concepts: ...".
GUIDE = "honesty, creativity, confidence, helpfulness, formality, verbosity, enthusiasm, empathy"
DIRECTORY = Path(build.__file__).resolve().parent


def load(concept: str) -> list[dict[str, str]]:
    text = (DIRECTORY / f"{concept}.jsonl").read_text(encoding="utf-8")
    return [json.loads(line) for line in text.splitlines()]


def test_the_generator_knows_exactly_the_tools_concepts():
    assert tuple(GUIDE.split(", ")) == CONCEPTS
    assert set(build.CONCEPTS) == set(CONCEPTS)
    assert sorted(p.stem for p in DIRECTORY.glob("*.jsonl")) == sorted(CONCEPTS)


@pytest.mark.parametrize("concept", CONCEPTS)
def test_pairs_are_well_formed(concept):
    pairs = load(concept)
    assert len(pairs) >= 64
    for pair in pairs:
        assert set(pair) == {"positive", "negative"}
        for prompt in pair.values():
            assert isinstance(prompt, str) and prompt
            assert prompt == prompt.strip()
            assert len(prompt.split()) <= build.MAX_WORDS
    assert len({(p["positive"], p["negative"]) for p in pairs}) == len(pairs)
    assert len({p["positive"] for p in pairs}) == len(pairs)
    assert len({p["negative"] for p in pairs}) == len(pairs)


@pytest.mark.parametrize("concept", CONCEPTS)
def test_a_pairs_prompts_differ_but_end_in_the_same_words(concept):
    for pair in load(concept):
        positive, negative = pair["positive"], pair["negative"]
        assert positive != negative
        assert positive.split()[-3:] == negative.split()[-3:], pair


@pytest.mark.parametrize("concept", CONCEPTS)
def test_lines_are_clean_utf8(concept):
    raw = (DIRECTORY / f"{concept}.jsonl").read_bytes()
    text = raw.decode("utf-8")
    assert text.endswith("\n") and "\r" not in text
    assert all(line == line.rstrip() and line for line in text.split("\n")[:-1])


def test_rebuilding_reproduces_the_committed_files(tmp_path):
    written = build.build(tmp_path)
    assert sorted(p.name for p in written) == sorted(f"{c}.jsonl" for c in CONCEPTS)
    for path in written:
        assert path.read_bytes() == (DIRECTORY / path.name).read_bytes(), path.name
