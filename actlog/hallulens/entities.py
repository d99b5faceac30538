"""Nonsense mixed entities: HalluLens' made-up names and the questions that ask about them.

A reproduction of the generator behind HalluLens' "MixedEntities" refusal test
(facebookresearch/HalluLens, tasks/refusal_test/entities_generation.py; arXiv 2504.17550):

- animal, plant, bacteria: draw a real species (genus + epithet) uniformly, swap its genus for
  a sibling genus under the same parent (here: the family), keep the epithet, and reject the
  result when it is a real name (`NonsenseTaxonomyGeneration.makeup_names`);
- medicine: draw a real name, and build a new one with as many words, each word drawn from
  the words found at that position in real names of that word count; reject real names
  (`NonsenseMedicineGeneration`, with HalluLens' lowercasing and cleaning of the list);
- one of the ten question templates per name, filled with the name and the type word
  (`NonsenseMixedGeneration.make_prompt_objs`); rows are {prompt, name, type}.

Deliberate differences from HalluLens:

- The real names are the small hand-made lists in data/ (data/README.md), not HalluLens'
  downloads (the ITIS taxonomy and the Kaggle medicine list).
- Deterministic for a seed: each domain draws from its own `random.Random(seed)` (HalluLens
  reseeds the global generator with the same seed per domain, so the streams match in kind),
  every pool is a sorted list, and names keep the order they were made in. HalluLens keeps
  names in sets of str, whose order changes with PYTHONHASHSEED.
- A request for more names than the lists can make raises ValueError; HalluLens loops forever.
"""

from __future__ import annotations

import csv
import json
import random
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from actlog.hallulens.prompts import DESCRIBE_PROMPTS

DATA_DIR = Path(__file__).resolve().parent / "data"
MEDICINE_FILE = "medicines.txt"
SPECIES_FILES = {
    "animal": "species_animal.json",
    "plant": "species_plant.json",
    "bacteria": "species_bacteria.json",
}
# HalluLens' `type` strings, in the order nonsense_all generates them.
ENTITY_TYPES = ("medicine", "animal", "plant", "bacteria")
EXPERIMENTS: dict[str, tuple[str, ...]] = {
    "nonsense_all": ENTITY_TYPES,
    "nonsense_medicine": ("medicine",),
    "nonsense_animal": ("animal",),
    "nonsense_plant": ("plant",),
    "nonsense_bacteria": ("bacteria",),
}
CSV_COLUMNS = ("prompt", "name", "type")
# HalluLens gives up on medicine names longer than this (`generate_similar_name`).
MAX_MEDICINE_WORDS = 3


@dataclass(frozen=True, order=True)
class Species:
    family: str
    genus: str
    epithet: str

    @property
    def name(self) -> str:
        return f"{self.genus} {self.epithet}"


@dataclass(frozen=True)
class Taxonomy:
    """One kingdom's real species, grouped family -> genus -> epithets, plus other real
    binomials (synonyms, older combinations) that a mix must not produce either."""

    entity_type: str
    kingdom: str
    families: Mapping[str, Mapping[str, tuple[str, ...]]]
    also_real: frozenset[str]

    def species(self) -> list[Species]:
        """Every listed species, sorted (the pool HalluLens draws from uniformly)."""
        return sorted(
            Species(family, genus, epithet)
            for family, genera in self.families.items()
            for genus, epithets in genera.items()
            for epithet in epithets
        )

    def names(self) -> frozenset[str]:
        """Every real name this kingdom's file knows: listed species and `also_real`."""
        return frozenset(s.name for s in self.species()) | self.also_real


def _check_entity_type(entity_type: str) -> None:
    if entity_type not in ENTITY_TYPES:
        raise ValueError(f"unknown entity type {entity_type!r}; expected one of {ENTITY_TYPES}")


def load_taxonomy(entity_type: str, data_dir: str | Path | None = None) -> Taxonomy:
    """The shipped (or `data_dir`'s) species list for "animal", "plant" or "bacteria"."""
    if entity_type not in SPECIES_FILES:
        raise ValueError(f"no species list for {entity_type!r}; expected one of {SPECIES_FILES}")
    return _load_taxonomy(entity_type, str(Path(data_dir or DATA_DIR).resolve()))


@cache
def _load_taxonomy(entity_type: str, data_dir: str) -> Taxonomy:
    path = Path(data_dir) / SPECIES_FILES[entity_type]
    raw = json.loads(path.read_text(encoding="utf-8"))
    try:
        families = {
            str(family): {str(genus): tuple(map(str, eps)) for genus, eps in genera.items()}
            for family, genera in raw["families"].items()
        }
        taxonomy = Taxonomy(
            entity_type=entity_type,
            kingdom=str(raw["kingdom"]),
            families=families,
            also_real=frozenset(map(str, raw.get("also_real", []))),
        )
    except (KeyError, AttributeError, TypeError) as error:
        raise ValueError(f"{path}: not a species list ({error})") from error
    for name in (s.name for s in taxonomy.species()):
        if len(name.split(" ")) != 2:
            raise ValueError(f"{path}: {name!r} is not a two-word binomial")
    return taxonomy


def real_species_names(data_dir: str | Path | None = None) -> frozenset[str]:
    """All real binomials of all three kingdoms: what a mixed name is checked against.

    HalluLens checks against every name in its ITIS dump, whatever the kingdom; so do we.
    """
    names: frozenset[str] = frozenset()
    for entity_type in SPECIES_FILES:
        names |= load_taxonomy(entity_type, data_dir).names()
    return names


def clean_medicine_name(raw: str) -> str | None:
    """A medicine-list entry as HalluLens cleans it (`get_orinal_names`): lowercased, any
    "(...)" removed, words containing a digit dropped. None for entries HalluLens skips
    (those with "," or "&") and for entries left empty, which HalluLens could not split."""
    name = re.sub(r"\(.*?\)", "", str(raw).lower())
    if "," in name or "&" in name:
        return None
    name = " ".join(w for w in name.split() if not any(c.isdigit() for c in w))
    return name or None


def load_medicine_names(data_dir: str | Path | None = None) -> list[str]:
    """The shipped medicine list, cleaned as HalluLens cleans it, in file order; a name that
    two entries clean to appears twice, as in HalluLens (it weighs the draw)."""
    return list(_load_medicine_names(str(Path(data_dir or DATA_DIR).resolve())))


@cache
def _load_medicine_names(data_dir: str) -> tuple[str, ...]:
    lines = (Path(data_dir) / MEDICINE_FILE).read_text(encoding="utf-8").splitlines()
    cleaned = (clean_medicine_name(line) for line in lines if line.strip())
    return tuple(name for name in cleaned if name)


class TaxonomyMixer:
    """Makes nonsense binomials for one kingdom: a sibling genus with a real epithet."""

    def __init__(self, taxonomy: Taxonomy, real_names: Iterable[str] | None = None) -> None:
        self.entity_type = taxonomy.entity_type
        self.species = taxonomy.species()
        self.real_names = frozenset(real_names) if real_names is not None else taxonomy.names()
        # Sorted, so that a draw picks the same genus whatever the hash seed.
        self.siblings = {
            (family, genus): sorted(g for g in genera if g != genus and genera[g])
            for family, genera in taxonomy.families.items()
            for genus in genera
        }

    def candidates(self) -> set[str]:
        """Every name this mixer can make."""
        return {
            f"{other} {s.epithet}"
            for s in self.species
            for other in self.siblings[(s.family, s.genus)]
            if f"{other} {s.epithet}" not in self.real_names
        }

    def capacity(self) -> int:
        return len(self.candidates())

    def makeup_names(self, n: int, rng: random.Random) -> list[str]:
        """`n` distinct nonsense names, drawn as HalluLens draws them, in the order made."""
        _check_count(n, self.capacity(), self.entity_type)
        names: list[str] = []
        made: set[str] = set()
        while len(names) < n:
            sample = rng.choice(self.species)
            siblings = self.siblings[(sample.family, sample.genus)]
            if not siblings:
                continue
            name = f"{rng.choice(siblings)} {sample.epithet}"
            if name in self.real_names or name in made:
                continue
            made.add(name)
            names.append(name)
        return names


class MedicineMixer:
    """Makes nonsense medicine names from the words of real ones, position by position."""

    entity_type = "medicine"

    def __init__(self, existing_names: Sequence[str]) -> None:
        if not existing_names:
            raise ValueError("no medicine names to mix")
        self.existing_names = list(existing_names)
        self.existing = frozenset(self.existing_names)
        pools: dict[int, list[set[str]]] = {}
        for name in self.existing_names:
            parts = name.split()
            for position, word in enumerate(parts[:MAX_MEDICINE_WORDS]):
                pools.setdefault(len(parts), [set(), set(), set()])[position].add(word)
        # pools[length][position]: the words at `position` in real names of `length` words.
        self.pools = {
            length: [sorted(words) for words in pools[length][: min(length, MAX_MEDICINE_WORDS)]]
            for length in sorted(pools)
        }

    def capacity(self) -> int:
        """How many distinct names the pools can build that are not real names."""
        total = 0
        for length, pools in self.pools.items():
            if length > MAX_MEDICINE_WORDS:
                continue
            combinations = 1
            for pool in pools:
                combinations *= len(pool)
            # Every real name of `length` words is itself one of the combinations.
            total += combinations - sum(1 for n in self.existing if len(n.split()) == length)
        return total

    def similar_name(self, original: str, rng: random.Random) -> str:
        """HalluLens' `generate_similar_name`: a name shaped like `original`, or "" when
        `original` has more words than HalluLens mixes."""
        length = len(original.split())
        if length > MAX_MEDICINE_WORDS:
            return ""
        return " ".join(rng.choice(pool) for pool in self.pools[length])

    def makeup_names(self, n: int, rng: random.Random) -> list[str]:
        """`n` distinct nonsense names, drawn as HalluLens draws them, in the order made."""
        _check_count(n, self.capacity(), self.entity_type)
        names: list[str] = []
        made: set[str] = set()
        while len(names) < n:
            name = self.similar_name(rng.choice(self.existing_names), rng)
            if name and name not in self.existing and name not in made:
                made.add(name)
                names.append(name)
        return names


def _check_count(n: int, capacity: int, entity_type: str) -> None:
    if n < 0:
        raise ValueError(f"the number of names must not be negative, not {n}")
    if n > capacity:
        raise ValueError(
            f"asked for {n} nonsense {entity_type} names, but the shipped lists can make "
            f"only {capacity}; lower N or add real names to actlog/hallulens/data/"
        )


def make_mixer(
    entity_type: str, data_dir: str | Path | None = None
) -> TaxonomyMixer | MedicineMixer:
    """The generator for one entity type, on the shipped lists (or `data_dir`'s)."""
    _check_entity_type(entity_type)
    if entity_type == "medicine":
        return MedicineMixer(load_medicine_names(data_dir))
    return TaxonomyMixer(load_taxonomy(entity_type, data_dir), real_species_names(data_dir))


def max_names(entity_type: str, data_dir: str | Path | None = None) -> int:
    """The largest N the lists allow for `entity_type`."""
    return make_mixer(entity_type, data_dir).capacity()


def make_prompt_rows(
    names: Iterable[str], entity_type: str, rng: random.Random
) -> list[dict[str, str]]:
    """One {prompt, name, type} row per name, its template drawn from `rng`."""
    _check_entity_type(entity_type)
    return [
        {
            "prompt": rng.choice(DESCRIBE_PROMPTS).format(type=entity_type, name=name),
            "name": name,
            "type": entity_type,
        }
        for name in names
    ]


def generate_prompts(
    exp: str = "nonsense_all", *, n: int, seed: int = 1, data_dir: str | Path | None = None
) -> list[dict[str, str]]:
    """HalluLens' prompt rows for `exp` (its --exp): `n` names per domain (its --N), domains
    in HalluLens' order; the same `seed` (its --seed) gives the same rows, in the same order.

    Each domain's names and then its templates come from one `random.Random(seed)`, as
    HalluLens draws both from the global generator after seeding it for that domain.
    """
    if exp not in EXPERIMENTS:
        raise ValueError(f"invalid exp {exp!r}; expected one of {sorted(EXPERIMENTS)}")
    mixers = {entity_type: make_mixer(entity_type, data_dir) for entity_type in EXPERIMENTS[exp]}
    for entity_type, mixer in mixers.items():
        # Refuse before drawing anything, so no domain is made only to be thrown away.
        _check_count(n, mixer.capacity(), entity_type)
    rows: list[dict[str, str]] = []
    for entity_type, mixer in mixers.items():
        rng = random.Random(seed)
        rows += make_prompt_rows(mixer.makeup_names(n, rng), entity_type, rng)
    return rows


def task_name(exp: str, seed: int, n: int) -> str:
    """HalluLens' TASKNAME for a run, which names its prompt CSV and output directory."""
    return f"{exp}_{seed}_{n}"


def save_prompt_csv(rows: Iterable[Mapping[str, str]], path: str | Path) -> Path:
    """Write rows as HalluLens' prompt CSV (columns prompt, name, type, as pandas writes
    them) and return the path; parent directories are created."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=CSV_COLUMNS, lineterminator="\n")
        writer.writeheader()
        for row in rows:
            writer.writerow({column: row[column] for column in CSV_COLUMNS})
    return path


def load_prompt_csv(path: str | Path) -> list[dict[str, str]]:
    """The rows of a prompt CSV written by `save_prompt_csv` (or by HalluLens)."""
    with Path(path).open(encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f)
        missing = set(CSV_COLUMNS) - set(reader.fieldnames or ())
        if missing:
            raise ValueError(f"{path}: missing columns {sorted(missing)}")
        return [{column: row[column] for column in CSV_COLUMNS} for row in reader]
