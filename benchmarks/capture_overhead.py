"""What activation capture costs on both capture paths: generated tokens/s of plain vLLM
(compiled, without our worker extension) and of our engine compiled and eager, with capture
off, the last layer, 4 layers and every layer, measured side by side in one run.

    .venv/bin/python benchmarks/capture_overhead.py            # 64 requests x 128 tokens
    .venv/bin/python benchmarks/capture_overhead.py --requests 16 --max-tokens 32 --rounds 1

All three engines stay up for the whole run and the modes are interleaved round by round, so
machine noise hits them alike; each mode reports its best round. The compiled engine captures
inside the graph with every layer available (CAPTURE_LAYERS_AVAILABLE=all); the eager one uses
forward hooks. A real storage service process receives the captures, as in production.
Targets on CPU: compiled capture off >= 0.98 and compiled last layer >= 0.95 of plain vLLM, and
compiled last layer faster than eager last layer; all layers >= 0.9 of capture off on either
path. Start-up times (cold: the compile cache is keyed on the capture configuration) are
printed too.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
import uuid
from pathlib import Path

from actlog.launcher import Stack, StackConfig, free_port
from inference_service.config import InferenceSettings
from inference_service.engine import CaptureEngine
from inference_service.types import CaptureRequest, GenerationRequest, GenerationResult, Sampling

TOPICS = ["rivers", "mountains", "stars", "bread", "music", "trains", "forests", "bees"]


def prompts(n: int) -> list[str]:
    return [f"Request {i}: write a long, detailed essay about {TOPICS[i % len(TOPICS)]}."
            for i in range(n)]  # fmt: skip


async def run_ours(engine: CaptureEngine, texts: list[str], max_tokens: int, layers) -> float:
    sampling = Sampling(max_tokens=max_tokens, temperature=0.0, ignore_eos=True)
    if layers == "all":
        capture = CaptureRequest(enabled=True, preset="all")
    else:
        capture = CaptureRequest(enabled=layers is not None, layers=tuple(layers or ()))

    async def one(text: str) -> int:
        req = GenerationRequest(
            prompt=text, prompt_token_ids=None, sampling=sampling, capture=capture
        )
        tokens = 0
        async for item in engine.generate(req):
            if isinstance(item, GenerationResult):
                tokens += len(item.output_token_ids)
        return tokens

    start = time.perf_counter()
    total = sum(await asyncio.gather(*(one(t) for t in texts)))
    return total / (time.perf_counter() - start)


async def run_plain(llm, texts: list[str], max_tokens: int) -> float:
    from vllm import SamplingParams

    params = SamplingParams(max_tokens=max_tokens, temperature=0.0, ignore_eos=True)

    async def one(text: str) -> int:
        final = None
        async for out in llm.generate(text, params, uuid.uuid4().hex):
            final = out
        return len(final.outputs[0].token_ids)

    start = time.perf_counter()
    total = sum(await asyncio.gather(*(one(t) for t in texts)))
    return total / (time.perf_counter() - start)


async def start_plain(settings: InferenceSettings):
    """vLLM itself, compiled, on the same engine arguments without our extension."""
    from vllm.platforms import current_platform
    from vllm.v1.engine.async_llm import AsyncLLM

    from actlog_common.default_model import resolve_model
    from inference_service.engine_args import engine_args

    model = resolve_model("default")
    args = engine_args(
        settings, model, "plain", chunked_prefill=False, is_cpu=current_platform.is_cpu()
    ).args
    args.worker_extension_cls = ""
    args.additional_config = {}
    args.enforce_eager = False
    return await asyncio.to_thread(AsyncLLM.from_engine_args, args)


async def timed(what: str, start) -> tuple[object, float]:
    began = time.perf_counter()
    result = await start
    took = time.perf_counter() - began
    print(f"{what} started in {took:.0f} s", flush=True)
    return result, took


async def main(args: argparse.Namespace) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="actlog-bench-"))
    storage = Stack(
        StackConfig(
            storage_port=args.storage_port,
            storage_metrics_port=free_port(),
            activation_lmdb_path=str(tmp / "db"),
            log_dir=str(tmp),
        )
    )
    storage.start_service("storage")
    storage.wait_healthy(60, names=("storage",))

    def settings(name: str, **kw) -> InferenceSettings:
        return InferenceSettings(
            dtype=args.dtype,
            max_model_len=1024,
            enable_prefix_caching=False,
            storage_addr=storage.config.storage_addr,
            capture_spool_dir=str(tmp / f"spool-{name}"),
            capture_socket_dir=str(tmp / f"sock-{name}"),
            gpu_memory_utilization=0.3,
            capture_max_bytes=8 << 30,
            **kw,
        )

    compiled = CaptureEngine(
        settings("compiled", enforce_eager="false", capture_layers_available="all")
    )
    eager = CaptureEngine(settings("eager", enforce_eager="true"))
    starts = {}
    info, starts["ours, compiled"] = await timed("ours, compiled", compiled.start())
    _, starts["ours, eager"] = await timed("ours, eager", eager.start())
    plain, starts["plain vLLM, compiled"] = await timed(
        "plain vLLM, compiled", start_plain(settings("plain"))
    )

    n = info.num_layers
    four = [n // 4, n // 2, 3 * n // 4, n]
    modes = {
        "plain vLLM": (None, None),
        "compiled off": (compiled, None),
        "compiled last": (compiled, [n]),
        "compiled 4": (compiled, four),
        "compiled all": (compiled, "all"),
        "eager off": (eager, None),
        "eager last": (eager, [n]),
        "eager 4": (eager, four),
        "eager all": (eager, "all"),
    }
    if args.skip_all:
        modes = {k: v for k, v in modes.items() if not k.endswith(" all")}
    texts = prompts(args.requests)
    # Warm-up: first requests pay one-off allocation costs.
    await run_plain(plain, texts[:4], 8)
    for engine in (compiled, eager):
        await run_ours(engine, texts[:4], 8, None)
        await run_ours(engine, texts[:4], 8, "all")
    best: dict[str, float] = {}
    try:
        for round_ in range(args.rounds):
            for name, (engine, layers) in modes.items():
                if engine is None:
                    rate = await run_plain(plain, texts, args.max_tokens)
                else:
                    rate = await run_ours(engine, texts, args.max_tokens, layers)
                best[name] = max(best.get(name, 0.0), rate)
                print(f"round {round_ + 1}  {name:14s} {rate:8.1f} generated tokens/s", flush=True)
    finally:
        plain.shutdown()
        await compiled.stop(60)
        await eager.stop(60)
        storage.stop()
        del plain  # shut down now, not in a destructor at interpreter exit

    print(
        f"\n{args.requests} requests x {args.max_tokens} tokens, {info.model} {info.dtype}, "
        f"{n + 1} hidden states, best of {args.rounds} round(s), {os.cpu_count()} CPUs"
    )
    for what, took in starts.items():
        print(f"start-up  {what:22s} {took:6.0f} s")
    print(f"\n{'mode':14s} {'tokens/s':>10s} {'ratio':>30s}")
    print(f"{'plain vLLM':14s} {best['plain vLLM']:10.1f}")
    rows = [
        ("compiled off", "plain vLLM", 0.98),
        ("compiled last", "plain vLLM", 0.95),
        ("compiled last", "eager last", 1.0),
        ("compiled 4", "compiled off", None),
        ("compiled all", "compiled off", 0.9),
        ("eager off", "plain vLLM", None),
        ("eager last", "eager off", None),
        ("eager 4", "eager off", None),
        ("eager all", "eager off", 0.9),
    ]
    for name, base, target in rows:
        if name not in best:
            continue
        ratio = best[name] / best[base]
        goal = f" (target {'>' if target == 1.0 else '>='} {target})" if target else ""
        print(f"{name:14s} {best[name]:10.1f} {ratio:8.3f} x {base}{goal}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=64)
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--storage-port", type=int, default=50062)
    parser.add_argument("--skip-all", action="store_true", help="leave out the all-layers modes")
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    asyncio.run(main(parser.parse_args()))
