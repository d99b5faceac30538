"""One concept's prompts captured in-process (transformers) and through the served stack, in
one run: prompts/s of each and their ratio.

    .venv/bin/python benchmarks/concept_capture.py                      # honesty, 32 pairs
    .venv/bin/python benchmarks/concept_capture.py --concept empathy --pairs 64 --rounds 1

Starts storage, inference and gateway as real processes (float32, the default model, as
in-process runs), then alternates the two engines round by round on the same prompts and
layers, and reports each one's best round. Served capture includes the whole trip: the
gateway, vLLM's batched forward passes, the spool, storage, and reading the rows back.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from actlog.launcher import Stack, StackConfig
from actlog.repe.capture import capture_from_concept
from actlog.repe.inprocess import load_model
from actlog.repe.served import ServedStack


def main(args: argparse.Namespace) -> None:
    tmp = tempfile.mkdtemp(prefix="actlog-concept-bench-")
    config = StackConfig.on_free_ports(
        Path(tmp),
        dtype="float32",
        extra_env={"VLLM_CPU_KVCACHE_SPACE": "1", "MAX_MODEL_LEN": "1024"},
    )
    stack = Stack(config)
    stack.start()
    try:
        stack.wait_healthy(900)
        model, tokenizer = load_model("default")
        with ServedStack(config.gateway_url, config.storage_addr) as served:
            engines = {
                "in-process": lambda: capture_from_concept(
                    model, tokenizer, args.concept, args.layers, args.pairs
                ),
                "served": lambda: capture_from_concept(
                    None, None, args.concept, args.layers, args.pairs, server=served
                ),
            }
            engines["served"]()  # warm-up: vLLM's first batch, the channels
            best: dict[str, float] = {}
            for round_ in range(args.rounds):
                for name, run in engines.items():
                    start = time.perf_counter()
                    data = run()
                    rate = 2 * len(data["positive"]) / (time.perf_counter() - start)
                    print(f"round {round_ + 1}  {name:10s} {rate:7.2f} prompts/s", flush=True)
                    best[name] = max(best.get(name, 0.0), rate)
    finally:
        stack.stop()
    print(f"\n{args.concept}: {2 * args.pairs} prompts at layers {args.layers}, best of "
          f"{args.rounds} round(s), {os.cpu_count()} CPUs")  # fmt: skip
    for name, rate in best.items():
        print(f"{name:10s} {rate:7.2f} prompts/s")
    print(f"served / in-process: {best['served'] / best['in-process']:.2f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--concept", default="honesty")
    parser.add_argument("--pairs", type=int, default=32)
    parser.add_argument("--layers", default="recommended",
                        help='"recommended", "all", "last" or comma-separated indices')  # fmt: skip
    parser.add_argument("--rounds", type=int, default=3)
    parsed = parser.parse_args()
    if parsed.layers not in ("recommended", "all", "last"):
        parsed.layers = [int(x) for x in parsed.layers.split(",")]
    main(parsed)
