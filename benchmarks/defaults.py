"""Which engine configuration is fastest on this machine, and what `make up` picks here:
generated tokens/s of bfloat16 eager, float32 eager and float32 compiled, each capturing the
last layer, measured side by side in one run.

    .venv/bin/python benchmarks/defaults.py                  # 64 requests x 128 tokens, 2 rounds
    .venv/bin/python benchmarks/defaults.py --requests 16 --max-tokens 32 --rounds 1

The three engines stay up for the whole run and take turns round by round, so machine noise
hits them alike; each reports its best round and its start-up time. A real storage service
receives the captures. The last lines say what DTYPE=auto and ENFORCE_EAGER=auto choose on
this machine (inference_service/machine.py) and whether the measurement agrees.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
from pathlib import Path

from capture_overhead import prompts, run_ours, timed

from actlog.launcher import Stack, StackConfig, free_port
from inference_service.config import InferenceSettings
from inference_service.engine import CaptureEngine
from inference_service.machine import Machine, choose_dtype, choose_enforce_eager

CONFIGS = {
    "bfloat16 eager": {"dtype": "bfloat16", "enforce_eager": "true"},
    "float32 eager": {"dtype": "float32", "enforce_eager": "true"},
    "float32 compiled": {"dtype": "float32", "enforce_eager": "false"},
}


async def main(args: argparse.Namespace) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="actlog-defaults-"))
    storage = Stack(
        StackConfig(
            storage_port=free_port(),
            storage_metrics_port=free_port(),
            activation_lmdb_path=str(tmp / "db"),
            log_dir=str(tmp),
        )
    )
    storage.start_service("storage")
    storage.wait_healthy(60, names=("storage",))
    engines: dict[str, CaptureEngine] = {}
    starts: dict[str, float] = {}
    best: dict[str, float] = {}
    try:
        for name, config in CONFIGS.items():
            slug = name.replace(" ", "-")
            engine = CaptureEngine(
                InferenceSettings(
                    max_model_len=1024,
                    enable_prefix_caching=False,
                    storage_addr=storage.config.storage_addr,
                    capture_spool_dir=str(tmp / f"spool-{slug}"),
                    capture_socket_dir=str(tmp / f"sock-{slug}"),
                    capture_max_bytes=8 << 30,
                    **config,
                )
            )
            info, starts[name] = await timed(name, engine.start())
            engines[name] = engine
        last = [info.num_layers]
        texts = prompts(args.requests)
        for engine in engines.values():  # first requests pay one-off allocation costs
            await run_ours(engine, texts[:4], 8, last)
        for round_ in range(args.rounds):
            for name, engine in engines.items():
                rate = await run_ours(engine, texts, args.max_tokens, last)
                best[name] = max(best.get(name, 0.0), rate)
                print(f"round {round_ + 1}  {name:18s} {rate:8.1f} generated tokens/s", flush=True)
    finally:
        for engine in engines.values():
            await engine.stop(60)
        storage.stop()

    machine = Machine.detect(_device())
    print(
        f"\n{args.requests} requests x {args.max_tokens} tokens, last layer captured, best of "
        f"{args.rounds} round(s), {os.cpu_count()} CPUs, {machine.cpu_name or 'unknown CPU'}"
    )
    print(f"\n{'configuration':18s} {'start-up':>9s} {'tokens/s':>9s} {'x fastest':>10s}")
    fastest = max(best.values())
    for name in CONFIGS:
        rate = best[name]
        print(f"{name:18s} {starts[name]:8.0f}s {rate:9.1f} {rate / fastest:10.3f}")
    dtype = choose_dtype("auto", machine)
    eager = choose_enforce_eager("auto", machine)
    picked = f"{dtype.value} {'eager' if eager.value == 'true' else 'compiled'}"
    print(f"\nmake up picks: {picked}")
    print(f"  {dtype.reason}\n  {eager.reason}")
    if picked in best:
        print(f"  {picked}: {best[picked] / fastest:.3f} x the fastest measured here")


def _device() -> str:
    from vllm.platforms import current_platform

    return "cpu" if current_platform.is_cpu() else "cuda"


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=64)
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=2)
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
    asyncio.run(main(parser.parse_args()))
