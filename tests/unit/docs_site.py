"""The documentation as a reader gets it: pages with their generated tables filled in, and a
strict MkDocs build of the site (the docs tests and the deployment tests read it)."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"


def hooks() -> ModuleType:
    """docs/hooks.py, the build's own generator (it is not a package module)."""
    spec = importlib.util.spec_from_file_location("actlog_docs_hooks", DOCS / "hooks.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def rendered_pages() -> dict[str, str]:
    """Every page's Markdown as the build renders it, by path under docs/."""
    render = hooks().render
    return {str(p.relative_to(DOCS)): render(p.read_text()) for p in sorted(DOCS.rglob("*.md"))}


def build(config: Path, site: Path) -> subprocess.CompletedProcess[str]:
    """`mkdocs build --strict` of `config` into `site`."""
    mkdocs = shutil.which("mkdocs", path=str(Path(sys.executable).parent)) or "mkdocs"
    return subprocess.run(
        [mkdocs, "build", "--strict", "--config-file", str(config), "--site-dir", str(site)],
        capture_output=True, text=True, timeout=300, cwd=config.parent,
        env={"NO_MKDOCS_2_WARNING": "1", "PATH": str(Path(sys.executable).parent)},
    )  # fmt: skip
