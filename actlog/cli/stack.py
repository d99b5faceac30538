"""`actlog up`, `prepare-model`, `dead-letters` and `verify`: the stack on this machine."""

from __future__ import annotations

import inspect
import json
import logging
import signal
import time
import typing
from pathlib import Path
from typing import Annotated, Any

import typer

from actlog.cli.options import GATEWAY_URL, InferenceAddrOpt, ServerOpt, StorageAddrOpt
from actlog.launcher import (
    ServiceExited,
    Stack,
    StackConfig,
    env_name,
    inference_model_info,
    spooled_records,
)
from actlog_common import defaults
from actlog_common.default_model import DEFAULT_MODEL_NAME, is_default


def up(**options: Any) -> None:
    """Start storage, inference and gateway; stop all three on Ctrl-C."""
    timeout = options.pop("timeout")
    run_stack(StackConfig(**options), timeout)


def run_stack(config: StackConfig, timeout: float) -> None:
    """What `actlog up` does with its configuration (the original server's command line runs
    it too): start the three, print where they are, stop them in order on Ctrl-C; a stack
    that does not come up raises typer.Exit(1) after one line saying why."""
    defaults.configure_logging(logging.WARNING)
    model = config.model
    stack = Stack(config)
    logs = stack.log_location
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
            typer.echo(
                f"  {'inference':<10} loading {what} ({_expected_start(config.enforce_eager)})"
            )

    try:
        typer.echo(f"starting storage, inference and gateway; logs in {logs}")
        stack.start()
        stack.wait_healthy(timeout, on_ready=ready)
        typer.echo(stack_summary(stack, time.monotonic() - started))
        while all(p.poll() is None for p in stack.procs.values()):
            time.sleep(0.5)
        dead = [n for n, p in stack.procs.items() if p.poll() is not None]
        for name in dead:
            typer.echo(f"{name} exited: {stack.log_tail(name) or '(no log)'}", err=True)
        typer.echo(f"stopping the rest; logs in {logs}", err=True)
        raise typer.Exit(1)
    except (ServiceExited, TimeoutError) as exc:
        typer.echo(f"actlog did not come up: {exc}", err=True)
        typer.echo(f"logs in {logs}", err=True)
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


def _expected_start(enforce_eager: str) -> str:
    # As the inference service decides ENFORCE_EAGER (inference_service/machine.py): auto runs
    # eagerly on CPU and compiles on CUDA; a compiled start takes minutes on CPU.
    if enforce_eager.strip().lower() in {"false", "0", "no", "off"}:
        return "a few minutes: it is compiled, so that capture runs inside the compiled graph"
    return "about a minute"


def _capture_line(info: Any) -> str:
    stored = f"; rows stored as {info.capture_dtype}" if info.capture_dtype else ""
    why = f"  [{info.capture_path_reason}]" if info.capture_path_reason else ""
    if info.capture_path == "compiled":
        return (
            f"compiled (inside the graph), layers {list(info.available_layers)} "
            f"(CAPTURE_LAYERS_AVAILABLE; ENFORCE_EAGER=true for any layer){stored}{why}"
        )
    return f"{info.capture_path or 'eager'} (forward hooks), any layer{stored}{why}"


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
        f"  dtype      {info.dtype}  [{info.dtype_reason or 'DTYPE=' + config.dtype}]",
        f"  capture    {_capture_line(info)}",
        f"  storage    {config.storage_addr}  (gRPC; "
        f"metrics: http://{config.storage_host}:{config.storage_metrics_port}/metrics)",
        f"  records    {Path(config.activation_lmdb_path).resolve()}  (LMDB)",
        f"  spool      {Path(config.capture_spool_dir).resolve()}  (captures not yet stored)",
    ]
    if config.log_dir or config.log_file:
        lines.append(f"  logs       {stack.log_location}")
    lines.append("Press Ctrl-C to stop.")
    return "\n".join(lines)


def prepare_model(
    model_cache_dir: Annotated[
        str, typer.Option(envvar="MODEL_CACHE_DIR", help="default: ~/.cache/actlog/models")
    ] = "",
    force: Annotated[bool, typer.Option(help="convert again even if prepared")] = False,
) -> None:
    """Convert the packaged SmolLM2-135M-Instruct GGUF into a Hugging Face directory (once)."""
    from actlog_common.default_model import prepare_default_model

    defaults.configure_logging()
    path = prepare_default_model(Path(model_cache_dir) if model_cache_dir else None, force)
    typer.echo(str(path))


def dead_letters(
    retry: Annotated[
        list[str] | None, typer.Option(help="put this record back in line; repeatable")
    ] = None,
    retry_all: Annotated[bool, typer.Option(help="put every dead letter back in line")] = False,
    inference_addr: InferenceAddrOpt = defaults.INFERENCE_ADDR,
) -> None:
    """Records storage would not take, set aside in the inference service's spool; list them
    (JSON lines) or put them back in line for delivery."""
    import grpc

    from actlog_common.grpc_security import GrpcSecurity
    from actlog_common.v1 import inference_pb2, inference_pb2_grpc

    request = inference_pb2.DeadLettersRequest(retry=retry or [], retry_all=retry_all)
    try:
        with GrpcSecurity.from_env().channel(inference_addr) as channel:
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


def verify(
    server: ServerOpt = GATEWAY_URL,
    storage_addr: StorageAddrOpt = defaults.STORAGE_ADDR,
    model: Annotated[str | None, typer.Option("--model", help="default: the served one")] = None,
    auth_token: Annotated[
        str | None, typer.Option("--auth-token", help="accepted as the original; never stored")
    ] = None,
) -> None:
    """Check that activation logging works: one completion, its record found in storage."""
    from actlog.verify import VerificationFailed
    from actlog.verify import verify as run_verify

    try:
        verified = run_verify(server, storage_addr, model, auth_token)
    except VerificationFailed as error:
        typer.echo(f"FAILED: {error}", err=True)
        raise typer.Exit(1) from None
    typer.echo(verified.summary())
    typer.echo("OK: activations were logged")


def _up_signature() -> inspect.Signature:
    """`up`'s options: one per StackConfig field, with its environment variable, so that the
    command, the launcher and the services' settings cannot disagree."""
    hints = typing.get_type_hints(StackConfig)
    params = []
    for f in StackConfig.options():
        option = typer.Option(
            f"--{f.name.replace('_', '-')}", envvar=env_name(f), help=f.metadata["help"]
        )
        params.append(
            inspect.Parameter(
                f.name, inspect.Parameter.KEYWORD_ONLY, default=f.default,
                annotation=Annotated[hints[f.name], option],
            )
        )  # fmt: skip
    timeout = typer.Option(help="seconds to wait for all to be ready")
    params.append(
        inspect.Parameter(
            "timeout", inspect.Parameter.KEYWORD_ONLY, default=900.0,
            annotation=Annotated[float, timeout],
        )
    )  # fmt: skip
    return inspect.Signature(params, return_annotation=None)


up.__signature__ = _up_signature()  # type: ignore[attr-defined]
up.__annotations__ = {p.name: p.annotation for p in up.__signature__.parameters.values()}


def register(app: typer.Typer) -> None:
    """Add the stack commands to the `actlog` CLI."""
    app.command()(up)
    app.command("prepare-model")(prepare_model)
    app.command("dead-letters")(dead_letters)
    app.command()(verify)
