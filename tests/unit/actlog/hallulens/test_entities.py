"""The nonsense-mixed-entities generator: HalluLens' mixing, on the shipped real names.

Each nonsense name is a real species with its genus swapped for a sibling genus of the same
family (or a medicine name rebuilt word by word from real ones), is never a real name, and
is asked about in one of HalluLens' ten templates. The same seed gives the same rows in the
same order, whatever PYTHONHASHSEED is.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from actlog.hallulens import entities
from actlog.hallulens.entities import (
    DESCRIBE_PROMPTS,
    ENTITY_TYPES,
    EXPERIMENTS,
    MedicineMixer,
    TaxonomyMixer,
    clean_medicine_name,
    generate_prompts,
    load_medicine_names,
    load_prompt_csv,
    load_taxonomy,
    make_mixer,
    max_names,
    real_species_names,
    save_prompt_csv,
    task_name,
)

ROOT = Path(__file__).resolve().parents[4]
KINGDOMS = ("animal", "plant", "bacteria")
# sha256 of "\n".join(DESCRIBE_PROMPTS) in HalluLens' entities_generation.py (commit 80307ac).
UPSTREAM_TEMPLATES_SHA256 = "f5c7255701e7f6ed15dcb0bf359c94abfeb4346beef96cfff984a6331746ad46"


def template_of(row: dict[str, str]) -> int:
    """Which template a row's prompt is (its index), or -1."""
    for index, template in enumerate(DESCRIBE_PROMPTS):
        if template.format(type=row["type"], name=row["name"]) == row["prompt"]:
            return index
    return -1


# ------------------------------------------------------------------------------ templates


def test_the_ten_templates_are_hallulens_verbatim():
    assert len(DESCRIBE_PROMPTS) == 10
    digest = hashlib.sha256("\n".join(DESCRIBE_PROMPTS).encode()).hexdigest()
    assert digest == UPSTREAM_TEMPLATES_SHA256
    assert DESCRIBE_PROMPTS[0] == "What can you tell me about the {type} {name}?"


def test_the_type_words_and_experiments_are_hallulens():
    assert ENTITY_TYPES == ("medicine", "animal", "plant", "bacteria")
    assert EXPERIMENTS == {
        "nonsense_all": ("medicine", "animal", "plant", "bacteria"),
        "nonsense_medicine": ("medicine",),
        "nonsense_animal": ("animal",),
        "nonsense_plant": ("plant",),
        "nonsense_bacteria": ("bacteria",),
    }


# ---------------------------------------------------------------------------------- data


@pytest.mark.parametrize("kingdom", KINGDOMS)
def test_each_kingdom_lists_enough_species_in_families_of_several_genera(kingdom):
    taxonomy = load_taxonomy(kingdom)
    species = taxonomy.species()
    assert len(species) >= 200
    assert len(taxonomy.families) >= 40
    for family, genera in taxonomy.families.items():
        assert len(genera) >= 2, family
        for genus, epithets in genera.items():
            assert genus[0].isupper() and genus[1:].islower(), genus
            assert epithets and len(set(epithets)) == len(epithets), genus
            assert all(e == e.lower() and " " not in e for e in epithets), genus
    assert len({s.name for s in species}) == len(species)


def test_no_species_is_listed_in_two_places():
    seen: dict[str, str] = {}
    for kingdom in KINGDOMS:
        for s in load_taxonomy(kingdom).species():
            assert s.name not in seen, (s.name, seen.get(s.name), kingdom)
            seen[s.name] = kingdom


def test_the_medicine_list_has_enough_names_of_one_to_three_words():
    names = load_medicine_names()
    assert len(set(names)) >= 300
    lengths = Counter(len(name.split()) for name in names)
    assert lengths[2] >= 100 and lengths[3] >= 30 and lengths[1] >= 30


@pytest.mark.parametrize(
    ("raw", "cleaned"),
    [
        ("Dolo 650 Tablet", "dolo tablet"),
        ("Augmentin 625 Duo Tablet", "augmentin duo tablet"),
        ("Crocin (Paracetamol) 500mg Tablet", "crocin tablet"),
        ("Betadine 10% Ointment", "betadine ointment"),
        ("Telma-H Tablet", "telma-h tablet"),
        ("Nyquil Cold & Flu", None),
        ("Amoxicillin, Clavulanate", None),
        ("500 mg", "mg"),
        ("650", None),
    ],
)
def test_medicine_names_are_cleaned_as_hallulens_cleans_them(raw, cleaned):
    assert clean_medicine_name(raw) == cleaned


# ------------------------------------------------------------------------------- mixing


@pytest.mark.parametrize("kingdom", KINGDOMS)
def test_a_species_mix_is_a_sibling_genus_with_a_real_epithet(kingdom):
    taxonomy = load_taxonomy(kingdom)
    by_epithet: dict[str, list] = {}
    for s in taxonomy.species():
        by_epithet.setdefault(s.epithet, []).append(s)
    names = make_mixer(kingdom).makeup_names(300, random.Random(7))
    for name in names:
        genus, epithet = name.split(" ")
        # Some real species with this epithet sits in a family that also holds `genus`.
        assert any(
            genus in taxonomy.families[s.family] and genus != s.genus
            for s in by_epithet.get(epithet, [])
        ), name


@pytest.mark.parametrize("entity_type", ENTITY_TYPES)
def test_no_mix_is_a_real_name(entity_type):
    names = make_mixer(entity_type).makeup_names(500, random.Random(11))
    assert len(set(names)) == len(names) == 500
    real = set(load_medicine_names()) if entity_type == "medicine" else real_species_names()
    assert not set(names) & real


def test_also_real_names_are_never_produced():
    # Felis leo (Linnaeus' lion) is exactly what swapping Panthera for Felis makes.
    assert "Felis leo" in load_taxonomy("animal").also_real
    mixer = make_mixer("animal")
    assert "Felis leo" not in mixer.candidates()
    assert "Felis leo" not in mixer.makeup_names(mixer.capacity(), random.Random(0))


def test_a_medicine_mix_takes_each_word_from_that_position_in_real_names_of_its_length():
    real = load_medicine_names()
    at = {(len(n.split()), i, w) for n in real for i, w in enumerate(n.split())}
    for name in make_mixer("medicine").makeup_names(300, random.Random(5)):
        words = name.split()
        assert 2 <= len(words) <= 3, name  # every one-word mix is a real name
        assert all((len(words), i, w) in at for i, w in enumerate(words)), name
        assert name == name.lower()


def test_capacity_counts_exactly_the_possible_mixes(tmp_path):
    (tmp_path / "species_animal.json").write_text(
        json.dumps(
            {
                "kingdom": "Animalia",
                "families": {"Fidae": {"Aa": ["x", "y"], "Bb": ["x", "z"]}, "Gidae": {"Cc": ["w"]}},
                "also_real": ["Bb y"],
            }
        )
    )
    mixer = TaxonomyMixer(load_taxonomy("animal", tmp_path))
    # Aa x / Bb x are real, Bb y is an old combination, Cc has no sibling: only Aa z.
    assert mixer.candidates() == {"Aa z"}
    assert mixer.makeup_names(1, random.Random(0)) == ["Aa z"]
    with pytest.raises(ValueError, match="only 1"):
        mixer.makeup_names(2, random.Random(0))

    medicine = MedicineMixer(["alpha tablet", "beta syrup", "gamma", "delta forte gel"])
    assert medicine.capacity() == 2
    assert set(medicine.makeup_names(2, random.Random(0))) == {"alpha syrup", "beta tablet"}


def test_more_names_than_the_lists_can_make_is_a_clear_error():
    for entity_type in ENTITY_TYPES:
        limit = max_names(entity_type)
        assert limit >= 2000  # HalluLens' default N
        with pytest.raises(ValueError, match=f"{limit + 1} nonsense {entity_type}.*only {limit}"):
            generate_prompts(f"nonsense_{entity_type}", n=limit + 1)
    with pytest.raises(ValueError, match="negative"):
        generate_prompts("nonsense_plant", n=-1)
    with pytest.raises(ValueError, match="invalid exp"):
        generate_prompts("nonsense_planets", n=1)


# -------------------------------------------------------------------------------- prompts


def test_n_names_per_domain_and_4n_for_nonsense_all():
    rows = generate_prompts("nonsense_all", n=30, seed=2)
    assert len(rows) == 120
    assert [row["type"] for row in rows] == [t for t in ENTITY_TYPES for _ in range(30)]
    for entity_type in ENTITY_TYPES:
        assert len(generate_prompts(f"nonsense_{entity_type}", n=30, seed=2)) == 30
    assert generate_prompts("nonsense_all", n=0) == []


def test_every_prompt_is_a_template_filled_with_its_name_and_type():
    rows = generate_prompts("nonsense_all", n=200, seed=4)
    assert all(set(row) == {"prompt", "name", "type"} for row in rows)
    templates = [template_of(row) for row in rows]
    assert -1 not in templates
    assert set(templates) == set(range(10))  # every template gets used


def test_a_domain_alone_gives_the_same_rows_as_within_nonsense_all():
    # HalluLens reseeds per domain, so a domain's rows do not depend on the others.
    everything = generate_prompts("nonsense_all", n=20, seed=9)
    assert generate_prompts("nonsense_plant", n=20, seed=9) == everything[40:60]


def test_the_same_seed_gives_the_same_rows_and_another_seed_others():
    first = generate_prompts("nonsense_all", n=50, seed=1)
    assert generate_prompts("nonsense_all", n=50, seed=1) == first
    other = generate_prompts("nonsense_all", n=50, seed=2)
    for entity_type in ENTITY_TYPES:
        names = {r["name"] for r in first if r["type"] == entity_type}
        assert names != {r["name"] for r in other if r["type"] == entity_type}


def test_the_rows_do_not_depend_on_the_hash_seed():
    code = (
        "import json; from actlog.hallulens.entities import generate_prompts; "
        "print(json.dumps(generate_prompts('nonsense_all', n=40, seed=3)))"
    )
    outputs = []
    for hash_seed in ("0", "12345"):
        env = {**os.environ, "PYTHONHASHSEED": hash_seed}
        done = subprocess.run(
            [sys.executable, "-c", code],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        )
        outputs.append(done.stdout)
    assert outputs[0] == outputs[1]
    assert json.loads(outputs[0]) == generate_prompts("nonsense_all", n=40, seed=3)


# ---------------------------------------------------------------------------------- files


def test_the_csv_is_hallulens_columns_and_reads_back(tmp_path):
    rows = generate_prompts("nonsense_all", n=5, seed=0)
    rows.append({"prompt": 'A "quoted", comma prompt?', "name": "x, y", "type": "plant"})
    path = save_prompt_csv(rows, tmp_path / "save" / "model" / "nonsense_all_0_5.csv")
    text = path.read_text(encoding="utf-8")
    assert text.startswith("prompt,name,type\n")
    assert "\r" not in text
    assert '"A ""quoted"", comma prompt?","x, y",plant\n' in text
    assert load_prompt_csv(path) == rows


def test_task_name_is_hallulens():
    assert task_name("nonsense_all", 0, 10) == "nonsense_all_0_10"


def test_the_module_does_not_touch_the_global_random_state():
    state = random.getstate()
    generate_prompts("nonsense_all", n=10, seed=0)
    assert random.getstate() == state
    assert entities.DATA_DIR.is_dir()
