"""The original activation-logging server's ways to start it, on this stack.

Its users start it as its README says, and with the flags its current version grew:

    python -m activation_logging.vllm_serve --model M [--auth_token T] [--host H] [--port P]
        [--lmdb_path PATH] [--target-layers all|first_half|second_half|...]
        [--trim-output-at SEQ] [--max-model-len N] [--gpu-memory-utilization F]
        [--log-file FILE] [--logprobs-top-k K] [--disable-logprobs]
    uvicorn activation_logging.server:app --host 0.0.0.0 --port 8000

The first is this module, the whole stack through the launcher (`actlog up`); the second is
the ASGI app in activation_logging/server.py. Every setting not given as a flag comes from
the environment, as for `actlog up` (INFERENCE_PORT, STORAGE_PORT, ...).

`--auth_token` (or HF_TOKEN) reaches the inference service only, through its environment, for
downloading a gated model: it is never stored or logged, and the process re-executes itself
without it so that it is in no process's arguments.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from typing import Any

from actlog.launcher import StackConfig
from actlog_common import defaults
from actlog_common.layers import LayerError, LayerSpec

logger = logging.getLogger(__name__)

MODULE = "activation_logging.vllm_serve"
TOKEN_FLAGS = ("--auth_token", "--auth-token")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=f"python -m {MODULE}",
        description="Start the activation-logging server: storage, inference (vLLM with "
        "capture) and the OpenAI-compatible gateway.",
    )
    p.add_argument("--model",
                   help="`default` (the offline SmolLM2-135M-Instruct; MODEL), a local Hugging "
                   "Face directory or a hub id")  # fmt: skip
    p.add_argument("--auth_token", "--auth-token", dest="auth_token",
                   help="Hugging Face token for a gated model (also HF_TOKEN): given to the "
                   "inference service only, never stored or logged")  # fmt: skip
    p.add_argument("--host", default="0.0.0.0", help="address the gateway binds (0.0.0.0)")
    p.add_argument("--port", type=int, default=defaults.GATEWAY_PORT,
                   help="the gateway's port (8000)")  # fmt: skip
    p.add_argument("--lmdb_path", "--lmdb-path", dest="lmdb_path",
                   help="where the records' LMDB lives (ACTIVATION_LMDB_PATH; "
                   f"{defaults.ACTIVATION_LMDB_PATH})")  # fmt: skip
    p.add_argument("--target-layers", "--target_layers", dest="target_layers",
                   default=os.environ.get("CAPTURE_DEFAULT_LAYERS", "last"),
                   help="layers captured by default: all, first_half, second_half, last, "
                   "recommended or comma-separated indices (0 = embeddings, -1 = the "
                   "final-normed output)")  # fmt: skip
    p.add_argument("--trim-output-at", "--trim_output_at", dest="trim_output_at",
                   help="cut every response, as returned and as stored, where this text "
                   "first appears (it is left out)")  # fmt: skip
    p.add_argument("--max-model-len", "--max_model_len", dest="max_model_len", type=int,
                   help="longest context (prompt and response) in tokens")  # fmt: skip
    p.add_argument("--gpu-memory-utilization", "--gpu_memory_utilization",
                   dest="gpu_memory_utilization", type=float,
                   help="share of GPU memory vLLM reserves")  # fmt: skip
    p.add_argument("--log-file", "--log_file", dest="log_file",
                   help="append every service's log to this one file (default: one file per "
                   "service in logs/)")  # fmt: skip
    p.add_argument("--logprobs-top-k", "--logprobs_top_k", dest="logprobs_top_k", type=int,
                   help="how many top candidates' logprobs to store per generated token "
                   "(ACTIVATION_LOGPROBS_TOPK)")  # fmt: skip
    p.add_argument("--disable-logprobs", "--disable_logprobs", dest="disable_logprobs",
                   action="store_true",
                   help="store no logprobs with the records "
                   "(ACTIVATION_LOGPROBS_ENABLED=false)")  # fmt: skip
    return p


def stack_config(args: argparse.Namespace) -> StackConfig:
    """The launcher's configuration for the parsed flags; the rest from the environment."""
    try:
        LayerSpec.parse(args.target_layers)
    except LayerError as error:
        parser().error(f"--target-layers: {error}")  # argparse's one line, exit 2
    # Flags over the environment over the launcher's defaults (StackConfig.from_env).
    given = {"model": args.model, "activation_lmdb_path": args.lmdb_path}
    settings: dict[str, Any] = {k: v for k, v in given.items() if v is not None}
    settings.update(gateway_host=args.host, gateway_port=args.port)
    if args.log_file:
        settings.update(log_dir=None, log_file=args.log_file)
    extra = {"CAPTURE_DEFAULT_LAYERS": args.target_layers}
    if args.trim_output_at:
        extra["TRIM_OUTPUT_AT"] = args.trim_output_at
    if args.max_model_len:
        extra["MAX_MODEL_LEN"] = str(args.max_model_len)
    if args.gpu_memory_utilization:
        extra["GPU_MEMORY_UTILIZATION"] = str(args.gpu_memory_utilization)
    if args.logprobs_top_k is not None:
        extra["ACTIVATION_LOGPROBS_TOPK"] = str(args.logprobs_top_k)
    if args.disable_logprobs:
        extra["ACTIVATION_LOGPROBS_ENABLED"] = "false"
    return StackConfig.from_env(**settings, extra_env=extra)


def without_token(argv: Sequence[str]) -> tuple[list[str], str | None]:
    """`argv` without --auth_token and its value, and the token. A flag without a value is
    left in place, for argparse to refuse."""
    rest: list[str] = []
    token = None
    items = list(argv)
    i = 0
    while i < len(items):
        flag, eq, value = items[i].partition("=")
        if flag in TOKEN_FLAGS:
            if eq and value:
                token, i = value, i + 1
                continue
            if not eq and i + 1 < len(items) and not items[i + 1].startswith("-"):
                token, i = items[i + 1], i + 2
                continue
        rest.append(items[i])
        i += 1
    return rest, token


def main(argv: Sequence[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    rest, token = without_token(argv)
    if token is not None:
        # Out of this process's arguments (readable in /proc by any local user) and into the
        # environment, which the launcher gives the inference service alone.
        env = {**os.environ, "HF_TOKEN": token}
        os.execve(sys.executable, [sys.executable, "-m", MODULE, *rest], env)
    args = parser().parse_args(rest)
    import typer

    from actlog.cli.stack import run_stack

    try:
        run_stack(stack_config(args), timeout=900.0)
    except typer.Exit as exit_:  # outside typer's own runner: the exit status, no traceback
        sys.exit(exit_.exit_code)
