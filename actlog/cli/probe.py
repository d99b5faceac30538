"""`actlog probe`: a linear probe per layer on a label of stored records."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import typer

from actlog.cli.options import (
    FilterOpt,
    ModelFilterOpt,
    PoolOpt,
    PositionOpt,
    SinceOpt,
    StorageAddrOpt,
    UntilOpt,
    check_pool,
    layers_option,
    record_filter,
    require_modules,
    storage_errors,
)
from actlog_common.defaults import STORAGE_ADDR, configure_logging
from actlog_common.layers import LayerSpec


def probe(
    label: Annotated[str, typer.Option("--label", help="the label to predict, e.g. hallucinated")],
    positive: Annotated[
        str, typer.Option("--positive", help="the label's value of the positive class")
    ] = "true",
    negative: Annotated[
        str | None,
        typer.Option("--negative", help="the negative class's value (default: any other)"),
    ] = None,
    layers: Annotated[LayerSpec | None, layers_option("every stored layer")] = None,
    pool: PoolOpt = "last_prompt",
    position: PositionOpt = 0,
    filters: FilterOpt = None,
    model: ModelFilterOpt = None,
    since_ms: SinceOpt = None,
    until_ms: UntilOpt = None,
    folds: Annotated[int, typer.Option("--folds", min=2, help="held-out folds")] = 5,
    bootstrap: Annotated[
        int, typer.Option("--bootstrap", min=0, help="resamples of the AUROC interval")
    ] = 1000,
    control: Annotated[
        bool, typer.Option("--control/--no-control", help="shuffled-label control per layer")
    ] = True,
    seed: Annotated[
        int, typer.Option("--seed", help="of the folds, the bootstrap and the control")
    ] = 0,
    balanced: Annotated[
        bool,
        typer.Option(
            "--balanced", help="weigh the classes inversely to their sizes (rare classes)"
        ),
    ] = False,
    output_dir: Annotated[
        Path | None,
        typer.Option(
            "--output-dir",
            help="report.json, auroc_by_layer.png and probes.safetensors (default: probe_LABEL)",
        ),
    ] = None,  # fmt: skip
    storage_addr: StorageAddrOpt = STORAGE_ADDR,
) -> None:
    """Train and evaluate a logistic-regression probe per layer on features pooled in storage."""
    configure_logging(logging.WARNING)
    require_modules("analysis", "sklearn", "matplotlib", "tqdm")
    from actlog.client import StorageClient
    from actlog.probes.logistic import ProbeDataError
    from actlog.probes.probe import Target, run_probe

    check_pool(pool)
    where = record_filter(model, filters, since_ms, until_ms)
    with storage_errors(), StorageClient(storage_addr) as client:
        try:
            report = run_probe(
                client, Target(label, positive, negative), layers, pool, position=position,
                where=where, folds=folds, bootstrap=bootstrap, control=control, seed=seed,
                class_weight="balanced" if balanced else None,
            )  # fmt: skip
        except ProbeDataError as error:
            raise typer.BadParameter(str(error), param_hint="--label") from None
    json_path, png_path = report.save(output_dir or Path(f"probe_{label}"))
    counts = report.class_counts
    typer.echo(
        f"{report.records} records ({counts['positive']} {label}={positive}, "
        f"{counts['negative']} other; {report.excluded} without a verdict, "
        f"{report.skipped} unusable), {report.pooling}, {folds}-fold held out:"
    )
    typer.echo("layer  AUROC  [95% CI]         acc    bal.acc  control")
    for s in report.layers:
        control_text = "" if s.control_auroc is None else f"{s.control_auroc:.3f}"
        typer.echo(
            f"{s.layer:5d}  {s.auroc:.3f}  [{s.auroc_ci[0]:.3f}, {s.auroc_ci[1]:.3f}]  "
            f"{s.accuracy:.3f}  {s.balanced_accuracy:.3f}    {control_text}"
        )
    best = report.best
    typer.echo(f"best layer {best.layer}: AUROC {best.auroc:.3f}; {json_path}, {png_path}")


def register(app: typer.Typer) -> None:
    """Add `probe` to the `actlog` CLI."""
    app.command("probe")(probe)
