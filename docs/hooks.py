"""MkDocs hook: the tables that must not drift from the code, generated at build time.

A page writes a marker and the build replaces it with a table read from the code itself:

- `<!-- generated: settings MODULE:CLASS -->`: every field of a pydantic settings class (its
  environment variable, which is also the CLI flag in kebab case, its default and its
  description);
- `<!-- generated: stack-options -->`: the options of `actlog up` (the launcher's StackConfig);
- `<!-- generated: metrics SERVICE -->`: every metric a service serves itself (name, type,
  labels, help), from the table its registry and collectors are built from;
- `<!-- generated: cli -->`: every `actlog` command with its arguments and options, read from
  the CLI application itself.

A field without a description, or a marker naming nothing, fails the build.
"""

from __future__ import annotations

import dataclasses
import importlib
import re
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

MARKER = re.compile(r"<!-- generated: (?P<kind>[\w-]+)(?: (?P<arg>\S+))? -->")


class GenerationError(ValueError):
    """A marker the code cannot fill: the page or the code must change."""


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _default(value: Any) -> str:
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, int) and value >= 1 << 20 and value % (1 << 20) == 0:
        mib = value >> 20
        return f"{mib >> 10} GiB" if mib % 1024 == 0 else f"{mib} MiB"
    if value in ("", None):
        return "(none)"
    return f"`{value}`"


def _import(target: str) -> Any:
    module, _, name = target.partition(":")
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as error:
        raise GenerationError(f"cannot import {target}: {error}") from error


def settings_rows(cls: Any) -> list[tuple[str, str, str]]:
    """(variable, default, meaning) of each field of a pydantic settings class."""
    from actlog_common.grpc_security import GrpcSecurityFields

    shared = set() if cls is GrpcSecurityFields else set(GrpcSecurityFields.model_fields)
    rows = []
    for name, field in cls.model_fields.items():
        if name in shared:
            continue
        if not field.description:
            raise GenerationError(f"{cls.__name__}.{name} has no description")
        rows.append((name.upper(), _default(field.default), field.description))
    return rows


def settings_table(target: str) -> str:
    cls = _import(target)
    lines = ["| variable / flag | default | meaning |", "|---|---|---|"]
    for env, default, meaning in settings_rows(cls):
        flag = "--" + env.lower().replace("_", "-")
        lines.append(f"| `{env}` / `{flag}` | {_cell(default)} | {_cell(meaning)} |")
    return "\n".join(lines)


def stack_options_table() -> str:
    from actlog.launcher import StackConfig, env_name

    lines = ["| option | environment | default | meaning |", "|---|---|---|---|"]
    for f in StackConfig.options():
        flag = "--" + f.name.replace("_", "-")
        default = f.default if f.default is not dataclasses.MISSING else ""
        lines.append(
            f"| `{flag}` | `{env_name(f)}` | {_cell(_default(default))} | "
            f"{_cell(f.metadata['help'])} |"
        )
    return "\n".join(lines)


METRICS = {
    "gateway": "gateway.metrics:GATEWAY_METRICS",
    "inference": "inference_service.metrics:CAPTURE_METRICS",
    "storage": "storage_service.metrics:STORAGE_METRICS",
}


def metric_rows(service: str) -> list[tuple[str, str, str, str]]:
    """(name as scraped, type, labels, help) of every metric `service` serves itself."""
    if service not in METRICS:
        raise GenerationError(f"no metrics table for {service!r}")
    return [
        (m.scraped_name, m.kind, ", ".join(m.labels), m.help) for m in _import(METRICS[service])
    ]


def metrics_table(service: str) -> str:
    lines = ["| metric | type | labels | meaning |", "|---|---|---|---|"]
    for name, kind, labels, doc in metric_rows(service):
        lines.append(f"| `{name}` | {kind} | {labels and f'`{labels}`'} | {_cell(doc)} |")
    return "\n".join(lines)


def _cli_command_doc(name: str, command: Any) -> list[str]:
    lines = [f"### `actlog {name}`", "", (command.help or "").strip().split("\n\n")[0], ""]
    rows = []
    for param in command.params:
        if param.hidden or param.name == "help":
            continue
        if param.param_type_name == "argument":
            rows.append((f"`{param.name.upper()}` (argument)", "", "", param.help or ""))
            continue
        flags = ", ".join(f"`{o}`" for o in [*param.opts, *param.secondary_opts])
        env = f"`{param.envvar}`" if isinstance(param.envvar, str) else ""
        flag = getattr(param, "is_flag", False)
        default = "" if param.default in (None, (), []) or flag else param.default
        rows.append((flags, env, _default(default) if default != "" else "", param.help or ""))
    if rows:
        lines += ["| option | environment | default | meaning |", "|---|---|---|---|"]
        lines += [f"| {a} | {b} | {_cell(str(c))} | {_cell(d)} |" for a, b, c, d in rows]
        lines.append("")
    return lines


def cli_reference() -> str:
    """Every visible `actlog` command, subcommands included, with its options."""
    import typer.main

    from actlog.cli import app

    lines: list[str] = []

    # Typer's commands are click's (typer vendors click): a group is what has `commands`.
    def walk(prefix: str, group: Any) -> None:
        for name, command in group.commands.items():
            if command.hidden:
                continue
            full = f"{prefix}{name}"
            if hasattr(command, "commands"):
                walk(f"{full} ", command)
            else:
                lines.extend(_cli_command_doc(full, command))

    walk("", typer.main.get_command(app))
    return "\n".join(lines)


def render(markdown: str) -> str:
    def fill(match: re.Match[str]) -> str:
        kind, arg = match["kind"], match["arg"]
        if kind == "settings" and arg:
            return settings_table(arg)
        if kind == "stack-options":
            return stack_options_table()
        if kind == "metrics" and arg:
            return metrics_table(arg)
        if kind == "cli":
            return cli_reference()
        raise GenerationError(f"unknown marker {match[0]}")

    return MARKER.sub(fill, markdown)


def on_page_markdown(markdown: str, **_: Any) -> str:
    return render(markdown)
