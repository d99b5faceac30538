"""Each part of the code imports only what its side of a boundary may see.

The three services never import one another and never import the client (`actlog`); the
client, CLI and launcher (`actlog`) import no service, so `pip install actlog` users (and the
services' images) get them without any service's code. What both sides need lives in
`actlog_common`, which imports none of them. The research subpackages (`actlog.repe`,
`actlog.probes`, `actlog.datasets`, `actlog.hallulens`) reach the services only through the
client and the public APIs, and the client never imports them (only the CLI does, inside
its commands). The originals' entry points (`capture_activations.py`, `tasks/`,
`activation_logging/`) are shims over the namespace; the original server's ASGI app
(activation_logging/server.py) alone runs the gateway in-process. The next crossing fails
here, naming the file.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SERVICES = frozenset({"gateway", "inference_service", "storage_service"})
RESEARCH = frozenset({"actlog.repe", "actlog.probes", "actlog.datasets", "actlog.hallulens"})
# Subpackages of the client itself (held to the client's rule).
CLIENT_PARTS = frozenset({"actlog.reads"})
CORE = {"actlog", "actlog_common"}
# What each unit may import besides itself. A file belongs to the longest unit its module
# name starts with; so does an imported module.
ALLOWED: dict[str, set[str]] = {
    "actlog_common": set(),
    **{service: {"actlog_common"} for service in SERVICES},
    "actlog": {"actlog_common"},
    "actlog.cli": CORE | RESEARCH,
    **{package: set(CORE) for package in RESEARCH},
    "capture_activations": {"actlog.repe", "actlog.cli"},
    "tasks": {"actlog.hallulens"},
    # Its ASGI app (server.py) runs the gateway and the launcher in one process.
    "activation_logging": CORE | {"actlog.cli", "gateway"},
}


def unit_of(module: str) -> str | None:
    """The unit a dotted module name belongs to (None: not first-party)."""
    parts = module.split(".")
    for n in range(len(parts), 0, -1):
        prefix = ".".join(parts[:n])
        if prefix in ALLOWED:
            return prefix
    return None


def module_of(path: Path) -> str:
    relative = path.relative_to(ROOT).with_suffix("")
    parts = relative.parts[:-1] if relative.name == "__init__" else relative.parts
    return ".".join(parts)


def imported_modules(path: Path, module: str) -> set[str]:
    """Modules `path` imports, at module level or in functions (relative: its own)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
        elif isinstance(node, ast.ImportFrom) and node.level > 0:
            names.add(module)
    return names


def crossings(module: str, path: Path) -> set[str]:
    unit = unit_of(module)
    assert unit is not None, f"{path} belongs to no unit"
    reached = {unit_of(name) for name in imported_modules(path, module)} - {None, unit}
    return reached - ALLOWED[unit]  # type: ignore[operator]


SOURCES = sorted(
    path
    for top in {u.split(".")[0] for u in ALLOWED}
    for path in ([ROOT / f"{top}.py"] if (ROOT / f"{top}.py").exists() else [])
    + sorted((ROOT / top).rglob("*.py"))
    if "/v1/" not in str(path)
)


@pytest.mark.parametrize("path", SOURCES, ids=[str(p.relative_to(ROOT)) for p in SOURCES])
def test_no_module_imports_across_its_boundary(path: Path) -> None:
    crossing = crossings(module_of(path), path)
    assert not crossing, f"{path.relative_to(ROOT)} imports {sorted(crossing)}"


def test_every_first_party_package_is_held_to_a_rule() -> None:
    top = {p.parent.name for p in ROOT.glob("*/__init__.py")}
    assert top == {u for u in ALLOWED if "." not in u} - {"capture_activations"}, (
        "a new top-level package needs its row in ALLOWED"
    )
    inner = {f"actlog.{p.parent.name}" for p in (ROOT / "actlog").glob("*/__init__.py")}
    assert inner == RESEARCH | CLIENT_PARTS | {"actlog.cli"}, (
        "a new actlog subpackage is research (RESEARCH) or part of the client (CLIENT_PARTS)"
    )


def test_a_crossing_is_caught(tmp_path: Path) -> None:
    """The walk sees imports anywhere in a file, not only at its top, and by unit: the
    client may not reach into research code, research may not reach a service."""
    source = tmp_path / "planted.py"
    source.write_text(
        "def f():\n    from actlog.client import StorageClient\n    import gateway.app\n"
    )
    assert crossings("storage_service.planted", source) == {"actlog", "gateway"}
    source.write_text("from actlog.repe import ControlVector\n")
    assert crossings("actlog.client", source) == {"actlog.repe"}
    assert crossings("actlog.probes.probe", source) == {"actlog.repe"}
    assert crossings("actlog.cli.repe", source) == set()
    source.write_text("from inference_service.capture.spool import Spool\n")
    assert crossings("actlog.datasets.parquet", source) == {"inference_service"}
