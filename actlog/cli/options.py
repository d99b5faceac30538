"""The options several `actlog` commands share, defined once so that the same thing has the
same name everywhere: where the services are (--storage-addr, --inference-addr, --server),
which records (--model, --filter, --since-ms, --until-ms), which layers (--layers), how rows
are pooled (--pool, --position)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated

import typer

from actlog.filters import MAX_MS, RecordFilter
from actlog_common import defaults
from actlog_common.layers import PRESETS, LayerError, LayerSpec
from actlog_common.pooling import POOLINGS

StorageAddrOpt = Annotated[
    str,
    typer.Option("--storage-addr", envvar="STORAGE_ADDR", help="storage service host:port"),
]
InferenceAddrOpt = Annotated[
    str,
    typer.Option("--inference-addr", envvar="INFERENCE_ADDR", help="inference service host:port"),
]
GATEWAY_URL = f"http://127.0.0.1:{defaults.GATEWAY_PORT}"
ServerOpt = Annotated[str, typer.Option("--server", help="the gateway's URL")]


def parse_layer_option(value: str | LayerSpec | None) -> LayerSpec | None:
    if value is None or isinstance(value, LayerSpec):
        return value
    try:
        return LayerSpec.parse(value)
    except LayerError as error:
        raise typer.BadParameter(str(error)) from None


_LAYERS_HELP = (
    f"{', '.join(PRESETS)} (recommended: 45%-85% of depth) or comma-separated hidden-state "
    "indices, e.g. 0,15,-1 (negative: from the end)"
)


def layers_option(default_help: str) -> typer.models.OptionInfo:
    """--layers, parsed by the one layer-spec parser (`actlog_common.layers.LayerSpec`)."""
    return typer.Option(
        "--layers", parser=parse_layer_option, metavar="LAYERS",
        help=f"{_LAYERS_HELP}; default: {default_help}",
    )  # fmt: skip


# The record filter (`actlog.RecordFilter`) of every command that selects records.
ModelFilterOpt = Annotated[str | None, typer.Option("--model", help="only records of this model")]
FilterOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--filter", metavar="KEY=VALUE",
        help="only records with this label value (repeatable; all must hold)",
    ),
]  # fmt: skip
SinceOpt = Annotated[
    int | None,
    typer.Option("--since-ms", min=0, max=MAX_MS, help="created at or after (Unix ms)"),
]
UntilOpt = Annotated[
    int | None, typer.Option("--until-ms", min=0, max=MAX_MS, help="created before (Unix ms)")
]


def parse_labels(pairs: list[str] | None, option: str = "--filter") -> dict[str, str]:
    """KEY=VALUE pairs as a dict (a key given twice keeps its last value)."""
    labels: dict[str, str] = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"expected key=value, got {pair!r}", param_hint=option)
        labels[key] = value
    return labels


def record_filter(
    model: str | None, filters: list[str] | None, since_ms: int | None, until_ms: int | None
) -> RecordFilter:
    """The filter options' value."""
    if since_ms is not None and until_ms is not None and until_ms <= since_ms:
        raise typer.BadParameter(f"--until-ms {until_ms} is not after --since-ms {since_ms}")
    return RecordFilter(model, parse_labels(filters), since_ms, until_ms)


PoolOpt = Annotated[
    str, typer.Option("--pool", help=f"{', '.join(POOLINGS)} (docs: features computed in storage)")
]
PositionOpt = Annotated[
    int, typer.Option("--position", help="the row for --pool position (negative: from the end)")
]


def check_pool(pool: str) -> str:
    if pool not in POOLINGS:
        raise typer.BadParameter(
            f"{pool!r} is not one of {', '.join(POOLINGS)}", param_hint="--pool"
        )
    return pool


def require_modules(extra: str, *modules: str) -> None:
    """Exit 1 saying which extra to install when one of `modules` is not importable (for
    commands of the optional dependencies, e.g. `actlog probe`)."""
    import importlib.util

    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        typer.echo(f"error: {', '.join(missing)} not installed: pip install 'actlog[{extra}]'",
                   err=True)  # fmt: skip
        raise typer.Exit(1)


@contextmanager
def storage_errors() -> Iterator[None]:
    """Report a failed storage call as `error: ...` and exit 1."""
    from actlog.errors import ActlogError

    try:
        yield
    except ActlogError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from exc
