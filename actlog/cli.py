"""`actlog`: run the stack locally, prepare the default model, query and export records."""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import time
from importlib.metadata import entry_points
from pathlib import Path
from typing import Annotated, Any

import typer

from actlog.cli_records import register_record_commands
from actlog.launcher import (
    ServiceExited,
    Stack,
    StackConfig,
    inference_model_info,
    spooled_records,
)
from actlog_common import defaults
from actlog_common.default_model import DEFAULT_MODEL_NAME, is_default

app = typer.Typer(help="Activation-logging LLM inference stack.", no_args_is_help=True)


@app.command()
def up(
    gateway_host: Annotated[str, typer.Option(envvar="GATEWAY_HOST")] = "127.0.0.1",
    gateway_port: Annotated[int, typer.Option(envvar="GATEWAY_PORT")] = defaults.GATEWAY_PORT,
    inference_host: Annotated[str, typer.Option(envvar="INFERENCE_HOST")] = "127.0.0.1",
    inference_port: Annotated[int, typer.Option(envvar="INFERENCE_PORT")] = (
        defaults.INFERENCE_PORT
    ),
    inference_metrics_port: Annotated[int, typer.Option(envvar="INFERENCE_METRICS_PORT")] = (
        defaults.INFERENCE_METRICS_PORT
    ),
    storage_host: Annotated[str, typer.Option(envvar="STORAGE_HOST")] = "127.0.0.1",
    storage_port: Annotated[int, typer.Option(envvar="STORAGE_PORT")] = defaults.STORAGE_PORT,
    storage_metrics_port: Annotated[int, typer.Option(envvar="STORAGE_METRICS_PORT")] = (
        defaults.STORAGE_METRICS_PORT
    ),
    activation_lmdb_path: Annotated[
        str, typer.Option(envvar="ACTIVATION_LMDB_PATH")
    ] = "lmdb_data/activations.lmdb",
    capture_spool_dir: Annotated[
        str, typer.Option(envvar="CAPTURE_SPOOL_DIR", help="captures waiting for storage")
    ] = "capture_spool",
    model: Annotated[
        str, typer.Option(envvar="MODEL", help="`default`, a local HF directory or a hub id")
    ] = "default",
    dtype: Annotated[str, typer.Option(envvar="DTYPE")] = "auto",
    log_dir: Annotated[
        str, typer.Option(envvar="ACTLOG_LOG_DIR", help="each service logs to <dir>/<name>.log")
    ] = "logs",
    timeout: Annotated[float, typer.Option(help="seconds to wait for all to be ready")] = 900,
) -> None:
    """Start storage, inference and gateway; stop all three on Ctrl-C."""
    defaults.configure_logging(logging.WARNING)
    config = StackConfig(
        gateway_host=gateway_host,
        gateway_port=gateway_port,
        inference_host=inference_host,
        inference_port=inference_port,
        inference_metrics_port=inference_metrics_port,
        storage_host=storage_host,
        storage_port=storage_port,
        storage_metrics_port=storage_metrics_port,
        activation_lmdb_path=activation_lmdb_path,
        capture_spool_dir=capture_spool_dir,
        model=model,
        dtype=dtype,
        log_dir=log_dir,
    )
    stack = Stack(config)
    stopping = False

    def _stop(signum: int, frame: object) -> None:
        nonlocal stopping
        if stopping:
            return
        stopping = True
        raise KeyboardInterrupt

    # Set here, not inherited: a shell that starts us in the background ignores SIGINT.
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _stop)
    started = time.monotonic()

    def ready(name: str) -> None:
        typer.echo(f"  {name:<10} ready after {time.monotonic() - started:.0f}s")
        if name == "storage":
            what = f"the default model, {DEFAULT_MODEL_NAME}" if is_default(model) else model
            typer.echo(f"  {'inference':<10} loading {what} ({_expected_start(dtype)})")

    try:
        typer.echo(f"starting storage, inference and gateway; logs in {Path(log_dir).resolve()}")
        stack.start()
        stack.wait_healthy(timeout, on_ready=ready)
        typer.echo(stack_summary(stack, time.monotonic() - started))
        while all(p.poll() is None for p in stack.procs.values()):
            time.sleep(0.5)
        dead = [n for n, p in stack.procs.items() if p.poll() is not None]
        for name in dead:
            typer.echo(f"{name} exited: {stack.log_tail(name) or '(no log)'}", err=True)
        typer.echo(f"stopping the rest; logs in {Path(log_dir).resolve()}", err=True)
        raise typer.Exit(1)
    except (ServiceExited, TimeoutError) as exc:
        typer.echo(f"actlog did not come up: {exc}", err=True)
        typer.echo(f"logs in {Path(log_dir).resolve()}", err=True)
        raise typer.Exit(1) from None
    except KeyboardInterrupt:
        typer.echo("stopping: gateway, then inference (it hands its pending captures to "
                   "storage), then storage...")  # fmt: skip
    finally:
        stack.stop()
    typer.echo(stop_summary(config))


def stop_summary(config: StackConfig) -> str:
    """Where the data stayed, and whether captures still wait to be delivered."""
    spool = Path(config.capture_spool_dir).resolve()
    waiting = spooled_records(spool)
    lines = [f"stopped; records in {Path(config.activation_lmdb_path).resolve()}"]
    if waiting:
        lines.append(
            f"{waiting} captured records wait in {spool}: they reach storage at the next start "
            f"with CAPTURE_SPOOL_DIR={spool}"
        )
    return "\n".join(lines)


def _expected_start(dtype: str) -> str:
    # As the inference service decides with ENFORCE_EAGER (from the environment we pass it):
    # auto compiles float32 only, on CPU; a compiled start takes minutes there.
    mode = os.environ.get("ENFORCE_EAGER", "auto").strip().lower()
    if mode in {"false", "0", "no", "off"} or (mode == "auto" and dtype == "float32"):
        return "a few minutes: it is compiled, so that capture runs inside the compiled graph"
    return "about a minute"


def _capture_line(info: Any) -> str:
    if info.capture_path == "compiled":
        return (
            f"compiled (inside the graph), layers {list(info.available_layers)} "
            "(CAPTURE_LAYERS_AVAILABLE; ENFORCE_EAGER=true for any layer)"
        )
    return f"{info.capture_path or 'eager'} (forward hooks), any layer"


def stack_summary(stack: Stack, elapsed_s: float) -> str:
    """What `actlog up` prints once everything is ready: where each service listens, where
    its metrics are, where the data lives."""
    config = stack.config
    info = inference_model_info(config.inference_addr, security=stack.security)
    kv = f", KV cache {info.kv_cache_bytes / (1 << 30):.2f} GiB" if info.kv_cache_bytes else ""
    host = config.inference_host
    lines = [
        f"actlog is up after {elapsed_s:.0f}s",
        f"  gateway    {config.gateway_url}  (OpenAI API: {config.gateway_url}/v1; "
        f"ready: /health, live: /health/live, metrics: /metrics)",
        f"  inference  {config.inference_addr}  (gRPC; {info.model}, {info.dtype}{kv}; "
        f"metrics: http://{host}:{config.inference_metrics_port}/metrics)",
        f"  capture    {_capture_line(info)}",
        f"  storage    {config.storage_addr}  (gRPC; "
        f"metrics: http://{config.storage_host}:{config.storage_metrics_port}/metrics)",
        f"  records    {Path(config.activation_lmdb_path).resolve()}  (LMDB)",
        f"  spool      {Path(config.capture_spool_dir).resolve()}  (captures not yet stored)",
    ]
    if config.log_dir:
        lines.append(f"  logs       {Path(config.log_dir).resolve()}")
    lines.append("Press Ctrl-C to stop.")
    return "\n".join(lines)


@app.command("prepare-model")
def prepare_model(
    model_cache_dir: Annotated[str, typer.Option(envvar="MODEL_CACHE_DIR")] = "",
    force: bool = False,
) -> None:
    """Convert the packaged SmolLM2-135M-Instruct GGUF into a Hugging Face directory (once)."""
    from actlog_common.default_model import prepare_default_model

    defaults.configure_logging()
    path = prepare_default_model(Path(model_cache_dir) if model_cache_dir else None, force)
    typer.echo(str(path))


@app.command("dead-letters")
def dead_letters(
    retry: Annotated[
        list[str] | None, typer.Option(help="put this record back in line; repeatable")
    ] = None,
    retry_all: Annotated[bool, typer.Option(help="put every dead letter back in line")] = False,
    inference: Annotated[
        str, typer.Option("--inference", envvar="INFERENCE_ADDR", help="inference host:port")
    ] = defaults.INFERENCE_ADDR,
) -> None:
    """Records storage would not take, set aside in the inference service's spool; list them
    (JSON lines) or put them back in line for delivery."""
    import grpc

    from actlog_common.grpc_security import GrpcSecurity
    from actlog_common.v1 import inference_pb2, inference_pb2_grpc

    request = inference_pb2.DeadLettersRequest(retry=retry or [], retry_all=retry_all)
    try:
        with GrpcSecurity.from_env().channel(inference) as channel:
            reply = inference_pb2_grpc.InferenceStub(channel).DeadLetters(request, timeout=30)
    except grpc.RpcError as exc:
        typer.echo(f"error: {exc.details() or exc.code().name}", err=True)
        raise typer.Exit(1) from None
    for record_id in reply.retried:
        typer.echo(json.dumps({"record_id": record_id, "retried": True}))
    for letter in reply.dead_letters:
        typer.echo(json.dumps({"record_id": letter.record_id, "reason": letter.reason}))
    missing = set(retry or ()) - set(reply.retried)
    if missing:
        typer.echo(f"not dead letters: {', '.join(sorted(missing))}", err=True)
        raise typer.Exit(1)


register_record_commands(app)


@app.command()
def verify(
    server: Annotated[
        str, typer.Option("--server", help="the gateway")
    ] = f"http://127.0.0.1:{defaults.GATEWAY_PORT}",
    storage: Annotated[
        str, typer.Option("--storage", envvar="STORAGE_ADDR", help="storage host:port")
    ] = defaults.STORAGE_ADDR,
    model: Annotated[str | None, typer.Option("--model", help="default: the served one")] = None,
    auth_token: Annotated[str | None, typer.Option("--auth-token")] = None,
) -> None:
    """Check that activation logging works: one completion, its record found in storage."""
    from actlog.verify import VerificationFailed
    from actlog.verify import verify as run_verify

    try:
        verified = run_verify(server, storage, model, auth_token)
    except VerificationFailed as error:
        typer.echo(f"FAILED: {error}", err=True)
        raise typer.Exit(1) from None
    typer.echo(verified.summary())
    typer.echo("OK: activations were logged")


# Commands of other installed packages (the research tools' `capture`, `control-vector`),
# found by entry point so that the client package imports none of them.
for _plugin in entry_points(group="actlog.commands"):
    _plugin.load()(app)


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


if __name__ == "__main__":
    main()
