"""`actlog hallulens ...`: HalluLens' nonsense mixed entities benchmark through the stack,
with exactly the flags of HalluLens' script (`python tasks/refusal_test/nonsense_mixed_
entities.py`), so a command line copied from either runs in the other."""

from __future__ import annotations

import typer


def hallulens(ctx: typer.Context) -> None:
    """HalluLens' nonsense mixed entities test: prompts, inference with capture, evaluation and
    labels on the records (`actlog hallulens --help` for its flags)."""
    from actlog.hallulens.nonsense_mixed_entities import main

    code = main(list(ctx.args))
    if code:
        raise typer.Exit(code)


def register(app: typer.Typer) -> None:
    """Add `hallulens` to the `actlog` CLI."""
    app.command(
        "hallulens",
        context_settings={"allow_extra_args": True, "ignore_unknown_options": True,
                          "help_option_names": []},
        add_help_option=False,
    )(hallulens)  # fmt: skip
