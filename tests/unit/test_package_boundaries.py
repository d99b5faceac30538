"""Each package imports only what its side of a boundary may see.

The three services never import one another and never import the client (`actlog`); the
client imports no service, so `pip install actlog` users (and the services' images) get the
client, CLI and launcher without any service's code. What both sides need lives in
`actlog_common`, which imports none of them. The research packages (representation
engineering, probes, datasets) and the benchmark tasks (`tasks`) reach the services only
through the client and the public APIs. The next crossing
fails here, naming the file.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SERVICES = frozenset({"gateway", "inference_service", "storage_service"})
RESEARCH = "representation_engineering"
TASKS = "tasks"
ANALYSIS = frozenset({"probing", "activation_datasets"})
FIRST_PARTY = SERVICES | ANALYSIS | {"actlog", "actlog_common", RESEARCH, TASKS}
# The first-party packages each package may import, besides itself.
ALLOWED = {
    "actlog": {"actlog_common"},
    "actlog_common": set(),
    **{service: {"actlog_common"} for service in SERVICES},
    RESEARCH: {"actlog", "actlog_common"},
    TASKS: {"actlog", "actlog_common"},
    **{package: {"actlog", "actlog_common"} for package in ANALYSIS},
}


def imported_packages(path: Path, package: str) -> set[str]:
    """Top-level packages `path` (in `package`) imports, at module level or in functions."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
        elif isinstance(node, ast.ImportFrom) and node.level > 0:
            names.add(package)  # relative: its own package
    return names


def crossings(package: str, path: Path) -> set[str]:
    return (imported_packages(path, package) & FIRST_PARTY) - ALLOWED[package] - {package}


SOURCES = [
    (package, path) for package in ALLOWED for path in sorted((ROOT / package).rglob("*.py"))
]


@pytest.mark.parametrize(
    ("package", "path"), SOURCES, ids=[str(path.relative_to(ROOT)) for _, path in SOURCES]
)
def test_no_package_imports_across_its_boundary(package: str, path: Path) -> None:
    crossing = crossings(package, path)
    assert not crossing, f"{path.relative_to(ROOT)} ({package}) imports {sorted(crossing)}"


def test_every_first_party_package_is_held_to_a_rule() -> None:
    packages = {p.parent.name for p in ROOT.glob("*/__init__.py")}
    assert packages == set(ALLOWED), "a new package needs its row in ALLOWED"


def test_a_crossing_is_caught(tmp_path: Path) -> None:
    """The walk sees imports anywhere in a file, not only at its top."""
    source = tmp_path / "probe.py"
    source.write_text(
        "def f():\n    from actlog.client import StorageClient\n    import gateway.app\n"
    )
    assert crossings("storage_service", source) == {"actlog", "gateway"}
