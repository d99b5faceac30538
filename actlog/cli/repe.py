"""`actlog capture` (= `python capture_activations.py`) and `actlog control-vector`."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated, Any

import typer

from actlog.cli.options import StorageAddrOpt, layers_option
from actlog_common.defaults import STORAGE_ADDR, configure_logging
from actlog_common.layers import LayerSpec

logger = logging.getLogger(__name__)

ModelOpt = Annotated[
    str,
    typer.Option("--model", help="hub id or local directory; default: the offline default model"),
]
ServerOpt = Annotated[
    str | None,
    typer.Option(
        "--server", help="capture through the stack's gateway (e.g. http://127.0.0.1:8000)"
    ),
]
DtypeOpt = Annotated[str, typer.Option("--dtype", help="in-process dtype: float32 or bfloat16")]
ConceptOpt = Annotated[
    str | None, typer.Option("--concept", help="a shipped concept, e.g. honesty")
]
ConceptFileOpt = Annotated[
    Path | None,
    typer.Option("--concept-file", help='JSONL of {"positive": ..., "negative": ...} pairs'),
]
MaxSamplesOpt = Annotated[
    int | None, typer.Option("--max-samples", min=1, help="use the first N pairs")
]


def _layers(spec: LayerSpec | None) -> list[int] | str | None:
    """A --layers value as the capture API takes it."""
    if spec is None:
        return None
    return spec.preset or list(spec.indices)


def _engine(model: str, dtype: str, server: str | None, storage: str) -> tuple[Any, Any, Any]:
    """(model, tokenizer, server) for the API: the stack when --server, else in-process."""
    if server:
        from actlog.repe.served import ServedStack

        return None, None, ServedStack(server, storage)
    from actlog.repe.inprocess import load_model

    loaded, tokenizer = load_model(model, dtype)
    return loaded, tokenizer, None


def capture(
    prompt: Annotated[str | None, typer.Option("--prompt", help="capture one prompt")] = None,
    concept: ConceptOpt = None,
    concept_file: ConceptFileOpt = None,
    output: Annotated[
        str, typer.Option("--output", help="writes OUTPUT.pt and OUTPUT.json")
    ] = "activations",
    max_samples: MaxSamplesOpt = None,
    layers: Annotated[LayerSpec | None, layers_option("all")] = None,
    use_hooks: Annotated[
        bool, typer.Option("--use-hooks", help="forward hooks: keep only the chosen layers")
    ] = False,
    model: ModelOpt = "default",
    server: ServerOpt = None,
    storage_addr: StorageAddrOpt = STORAGE_ADDR,
    dtype: DtypeOpt = "float32",
) -> None:
    """Capture hidden states of a prompt, or contrastive pairs of a concept, and save them."""
    configure_logging(logging.WARNING)
    if sum(x is not None for x in (prompt, concept, concept_file)) != 1:
        raise typer.BadParameter("give one of --prompt, --concept or --concept-file")
    if use_hooks and server:
        raise typer.BadParameter("--use-hooks is for in-process capture, not --server")
    from actlog.repe.capture import capture_activations, capture_from_concept
    from actlog.repe.saving import save_activations

    chosen = _layers(layers)
    loaded, tokenizer, stack = _engine(model, dtype, server, storage_addr)
    try:
        if prompt is not None:
            data = capture_activations(loaded, tokenizer, prompt, chosen, use_hooks, stack)
            what = f"{len(data['tokens'])} tokens"
        else:
            data = capture_from_concept(
                loaded, tokenizer, concept or "", chosen, max_samples, use_hooks, stack,
                str(concept_file) if concept_file else None,
            )  # fmt: skip
            what = f"{len(data['positive'])} pairs of {data['concept']}"
    except ValueError as error:
        raise typer.BadParameter(str(error)) from None
    finally:
        if stack is not None:
            stack.close()
    pt_path, json_path = save_activations(data, output)
    typer.echo(
        f"captured {what} at layers {data['captured_layers']} ({data['engine']}, "
        f"{data['model']}): {pt_path}, {json_path}"
    )


def control_vector(
    concept: ConceptOpt = None,
    concept_file: ConceptFileOpt = None,
    layers: Annotated[LayerSpec | None, layers_option("recommended")] = None,
    method: Annotated[
        str, typer.Option("--method", help="mean_diff, pca_diff or pca_center")
    ] = "pca_diff",
    output: Annotated[
        str | None,
        typer.Option(
            "--output",
            help="writes OUTPUT.safetensors, .gguf, .report.json, .report.png, .control.json",
        ),
    ] = None,
    max_samples: MaxSamplesOpt = None,
    heldout: Annotated[
        float, typer.Option("--heldout", min=0.05, max=0.5, help="share of pairs held out")
    ] = 0.25,
    seed: Annotated[int, typer.Option("--seed", help="of the held-out split")] = 0,
    model: ModelOpt = "default",
    server: ServerOpt = None,
    storage_addr: StorageAddrOpt = STORAGE_ADDR,
    dtype: DtypeOpt = "float32",
) -> None:
    """Train a concept's control vector from its pairs' last tokens, and report per layer how
    well it separates held-out pairs."""
    configure_logging(logging.WARNING)
    from actlog.repe.control_vector import METHODS
    from actlog.repe.training import (
        train_concept_vector,
        write_concept_vector,
    )

    if (concept is None) == (concept_file is None):
        raise typer.BadParameter("give one of --concept or --concept-file")
    if method not in METHODS:
        raise typer.BadParameter(f"--method must be one of {', '.join(METHODS)}")
    loaded, tokenizer, stack = _engine(model, dtype, server, storage_addr)
    chosen = _layers(layers or LayerSpec(preset="recommended"))
    try:
        result = train_concept_vector(
            loaded, tokenizer, concept, chosen, method, stack,  # type: ignore[arg-type]
            str(concept_file) if concept_file else None, max_samples, heldout, seed,
        )  # fmt: skip
    except ValueError as error:
        raise typer.BadParameter(str(error)) from None
    finally:
        if stack is not None:
            stack.close()
    prefix = output or f"{result.data['concept']}_vector"
    files = write_concept_vector(result, prefix)
    best = result.report.row(result.report.best_layer)
    typer.echo(
        f"{result.data['concept']} ({len(result.data['positive'])} pairs, {method}, "
        f"{result.data['engine']}): best layer {best.layer}, held-out accuracy "
        f"{best.accuracy:.3f}, AUROC {best.auroc:.3f}, stability {best.stability:.3f}; "
        f"recommended layers {result.report.recommended_layers}; shuffled-label control: "
        f"mean held-out accuracy {result.control_accuracy:.3f}"
    )
    paths = (files.safetensors, files.gguf, files.report_json, files.report_png,
             files.control_json)  # fmt: skip
    for path in paths:
        typer.echo(f"wrote {path}")
    for layer, reason in files.export.skipped.items():
        typer.echo(f"not in the GGUF: layer {layer} ({reason})", err=True)


def register(app: typer.Typer) -> None:
    """Add the research commands to the `actlog` CLI."""
    app.command("capture")(capture)
    app.command("control-vector")(control_vector)


def capture_main() -> None:
    """`python capture_activations.py ...`: the capture command on its own."""
    typer.run(capture)
