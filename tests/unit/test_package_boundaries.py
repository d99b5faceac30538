"""The client package never imports a service: `pip install actlog` users (and the services'
images) get the client, CLI and launcher without any service's code."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SERVICES = {"gateway", "inference_service", "storage_service"}


def imported_packages(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize(
    "path", sorted((ROOT / "actlog").rglob("*.py")), ids=lambda p: str(p.relative_to(ROOT))
)
def test_the_client_package_imports_no_service(path: Path) -> None:
    crossing = imported_packages(path) & SERVICES
    assert not crossing, f"{path.relative_to(ROOT)} imports {sorted(crossing)}"
