"""Lazy package exports (PEP 562): `from actlog.repe import ControlVector` works, while
`import actlog.repe.pairs` does not import torch, nor `import actlog` scikit-learn."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any


def lazy_exports(
    package: str, exports: Mapping[str, str]
) -> tuple[Callable[[str], Any], list[str]]:
    """A module `__getattr__` resolving each exported name from its module, and `__all__`.

    `exports` maps a public name to the module (relative to `package`) that defines it.
    """

    def __getattr__(name: str) -> Any:
        module = exports.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(f"{package}.{module}"), name)

    return __getattr__, sorted(exports)
