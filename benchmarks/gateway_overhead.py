"""What the HTTP gateway costs: the same batch of completions sent straight to the inference
service over gRPC and through the gateway with the official openai client, in one run.

    .venv/bin/python benchmarks/gateway_overhead.py                 # 64 requests, 16 at a time
    .venv/bin/python benchmarks/gateway_overhead.py --requests 32 --rounds 1

Starts storage, inference (float32, default model) and gateway as real processes; the two
paths alternate round by round and each reports its best round. Prints requests/s and
p50/p99 latency for both, and the throughput ratio (target: gateway >= 0.9 of direct).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
from pathlib import Path

import grpc
import openai

from actlog.launcher import Stack, StackConfig
from actlog_common.v1 import inference_pb2, inference_pb2_grpc


async def bounded(concurrency: int, jobs) -> list[float]:
    gate = asyncio.Semaphore(concurrency)

    async def timed(job) -> float:
        async with gate:
            start = time.perf_counter()
            await job()
            return time.perf_counter() - start

    return await asyncio.gather(*(timed(j) for j in jobs))


async def direct(address: str, prompts: list[str], max_tokens: int, concurrency: int):
    async with grpc.aio.insecure_channel(address) as channel:
        stub = inference_pb2_grpc.InferenceStub(channel)

        def job(prompt: str):
            async def run() -> None:
                request = inference_pb2.GenerateRequest(
                    prompt=prompt,
                    sampling=inference_pb2.SamplingParams(
                        max_tokens=max_tokens, temperature=0, ignore_eos=True
                    ),
                )
                async for _ in stub.Generate(request):
                    pass

            return run

        return await bounded(concurrency, [job(p) for p in prompts])


async def gateway(url: str, model: str, prompts: list[str], max_tokens: int, concurrency: int):
    client = openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="bench", max_retries=0)

    def job(prompt: str):
        async def run() -> None:
            await client.completions.create(
                model=model, prompt=prompt, max_tokens=max_tokens, temperature=0,
                extra_body={"ignore_eos": True},
            )  # fmt: skip

        return run

    try:
        return await bounded(concurrency, [job(p) for p in prompts])
    finally:
        await client.close()


def summary(latencies: list[float], wall: float) -> tuple[float, float, float]:
    ordered = sorted(latencies)
    p99 = ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]
    return len(latencies) / wall, statistics.median(ordered), p99


def main(args: argparse.Namespace) -> None:
    tmp = tempfile.mkdtemp(prefix="actlog-gw-bench-")
    config = StackConfig.on_free_ports(
        Path(tmp),
        dtype="float32",
        extra_env={"VLLM_CPU_KVCACHE_SPACE": "1", "MAX_MODEL_LEN": "1024"},
    )
    stack = Stack(config)
    stack.start()
    try:
        stack.wait_healthy(900)
        model = openai.OpenAI(base_url=f"{config.gateway_url}/v1", api_key="x").models.list()
        model_id = model.data[0].id
        prompts = [f"Request {i}: describe a city you like." for i in range(args.requests)]
        runs = {
            "direct gRPC": lambda: direct(config.inference_addr, prompts, args.max_tokens,
                                          args.concurrency),
            "gateway HTTP": lambda: gateway(config.gateway_url, model_id, prompts,
                                            args.max_tokens, args.concurrency),
        }  # fmt: skip
        asyncio.run(runs["gateway HTTP"]())  # warm-up
        best: dict[str, tuple[float, float, float]] = {}
        for round_ in range(args.rounds):
            for name, run in runs.items():
                start = time.perf_counter()
                latencies = asyncio.run(run())
                result = summary(latencies, time.perf_counter() - start)
                print(f"round {round_ + 1}  {name:13s} {result[0]:6.2f} req/s  "
                      f"p50 {result[1] * 1000:7.0f} ms  p99 {result[2] * 1000:7.0f} ms",
                      flush=True)  # fmt: skip
                if name not in best or result[0] > best[name][0]:
                    best[name] = result
    finally:
        stack.stop()

    print(f"\n{args.requests} requests x {args.max_tokens} tokens, {args.concurrency} at a time, "
          f"best of {args.rounds} round(s), {os.cpu_count()} CPUs")  # fmt: skip
    for name, (rps, p50, p99) in best.items():
        print(f"{name:13s} {rps:6.2f} req/s  p50 {p50 * 1000:7.0f} ms  p99 {p99 * 1000:7.0f} ms")
    ratio = best["gateway HTTP"][0] / best["direct gRPC"][0]
    print(f"gateway / direct throughput: {ratio:.3f} (target >= 0.9)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=64)
    parser.add_argument("--max-tokens", type=int, default=16)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3)
    main(parser.parse_args())
