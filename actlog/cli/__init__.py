"""`actlog`: run the stack locally, query and export records, and the research workflows.

Every command's options come from `actlog.cli.options` where they are shared, so the same
thing has one name everywhere; `main` turns every error into one line on stderr.
"""

from __future__ import annotations

import sys

import typer

from actlog.cli import dataset, hallulens, probe, records, repe, stack

app = typer.Typer(help="Activation-logging LLM inference stack.", no_args_is_help=True)
for _commands in (stack, records, probe, dataset, repe, hallulens):
    _commands.register(app)


def main(argv: list[str] | None = None) -> None:
    """The `actlog` console script. An error is one line on stderr, never a traceback:
    exit 2 for what the command line asked wrongly (a malformed value, a file that cannot
    be written), 1 for a call that failed (storage unreachable, no such record)."""
    from actlog.errors import ActlogError

    # Click's base error, from whichever click this typer uses (its own copy, since 0.26).
    click_error = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException")
    args = sys.argv[1:] if argv is None else argv
    try:
        code = app(args, standalone_mode=False, prog_name="actlog")
    except click_error as exc:
        ctx = getattr(exc, "ctx", None)
        where = ctx.command_path if ctx is not None else "actlog"
        _fail(f"{where}: error: {exc.format_message()}", exc.exit_code)
    except typer.Abort:
        _fail("actlog: aborted", 130)
    except KeyboardInterrupt:
        _fail("actlog: interrupted", 130)
    except ActlogError as exc:
        _fail(f"actlog: error: {exc}", 1)
    except (OSError, ValueError, OverflowError) as exc:
        _fail(f"actlog: error: {exc}", 2)
    sys.exit(code if isinstance(code, int) else 0)


def _fail(message: str, code: int) -> None:
    typer.echo(" ".join(message.split()), err=True)
    sys.exit(code)
