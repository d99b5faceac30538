"""Probe features: pooled in storage (the Features RPC) against full reads pooled in the
client, over the gRPC stream and over shared memory, in one run.

    .venv/bin/python benchmarks/probe_features.py [--records 1000 --positions 256 ...]

Starts `python -m storage_service` on a free port with its LMDB in a temporary directory
and stores, per hidden size, `--records` bfloat16 records of `--positions` rows of one
layer (prompts of 1/8 to 5/8 of the positions). Then, per pooling, gets one float32 vector
per record:
- storage: `StorageClient.features(...)`, one call for every record of the model;
- stream / shm: `iter_records` then `get_activations` of each record's whole layer
  (transport "stream" or "shm"), pooled with numpy in the client.
Checks that the three give the same vectors, prints records/s of each and the ratios
(target: storage >= 5x the stream path for last_prompt).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import grpc
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from actlog.client import StorageClient  # noqa: E402
from actlog_common.defaults import message_size_options  # noqa: E402
from actlog_common.dtypes import float32_to_bf16_bits  # noqa: E402
from actlog_common.pooling import pool, pooled_rows, pooling_value  # noqa: E402
from actlog_common.v1 import storage_pb2, storage_pb2_grpc  # noqa: E402
from benchmarks.storage_ingest import start_service  # noqa: E402
from storage_service.testing import synthetic_record  # noqa: E402

LAYER = 24
NUM_LAYERS = 30


def store_records(address: str, model: str, count: int, positions: int, hidden: int) -> None:
    """`count` records of `model`, one layer each; 8 distinct activation payloads reused."""
    rng = np.random.default_rng(hidden)
    payloads = [
        float32_to_bf16_bits(rng.standard_normal((positions, hidden), dtype=np.float32))
        for _ in range(8)
    ]
    rows_per_chunk = max(1, (512 << 10) // (hidden * 2))
    with grpc.insecure_channel(address, options=message_size_options(-1)) as channel:
        stub = storage_pb2_grpc.StorageStub(channel)
        for i in range(count):
            record = synthetic_record(
                f"benchmark prompt {i} ({model})", model=model, layers=(LAYER,),
                num_layers=NUM_LAYERS, num_positions=positions, hidden_size=hidden,
                prompt_length=1 + positions // 8 + (i * 37) % (positions // 2), seed=i,
                labels={"i": str(i)}, dtype="bfloat16",
            )  # fmt: skip
            record.wire[LAYER] = payloads[i % len(payloads)]
            reply = stub.Ingest(iter(record.requests(rows_per_chunk)), timeout=120)
            assert reply.status == storage_pb2.RECORD_STATUS_COMPLETE


def in_storage(address: str, model: str, pooling: str) -> tuple[list[str], np.ndarray]:
    with StorageClient(address, timeout=600) as client:
        feats = client.features(model=model, layers=[LAYER], pooling=pooling)
    return feats.record_ids, feats[LAYER]


def in_client(transport: str) -> Callable[[str, str, str], tuple[list[str], np.ndarray]]:
    def read(address: str, model: str, pooling: str) -> tuple[list[str], np.ndarray]:
        ids, vectors = [], []
        with StorageClient(address, timeout=600, transport=transport) as client:  # type: ignore[arg-type]
            for record in client.iter_records(model=model, page_size=1000):
                rows = client.get_activations(record, layers=[LAYER])[LAYER]
                span = pooled_rows(pooling_value(pooling), record.prompt_length,
                                   record.num_positions)  # fmt: skip
                vectors.append(pool(rows[span.start : span.end], span.mean))
                ids.append(record.record_id)
        return ids, np.stack(vectors)

    return read


PATHS = {"storage": in_storage, "stream": in_client("stream"), "shm": in_client("shm")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=1000)
    parser.add_argument("--positions", type=int, default=256)
    parser.add_argument("--hidden", default="576,4096", help="comma-separated hidden sizes")
    parser.add_argument("--poolings", default="last_prompt,mean_response")
    parser.add_argument("--rounds", type=int, default=2, help="best of this many rounds")
    parser.add_argument("--dir", help="where the LMDB goes (default: a temp dir)")
    args = parser.parse_args()
    hiddens = [int(h) for h in args.hidden.split(",")]
    poolings = args.poolings.split(",")
    data_bytes = sum(args.records * args.positions * h * 2 for h in hiddens)

    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        proc, address = start_service(Path(tmp) / "lmdb", max(1 << 30, 2 * data_bytes), "none",
                                      Path(tmp) / "storage.log")  # fmt: skip
        try:
            results = []
            for hidden in hiddens:
                model = f"bench-{hidden}"
                started = time.perf_counter()
                store_records(address, model, args.records, args.positions, hidden)
                took = time.perf_counter() - started
                print(f"hidden {hidden}: stored {args.records} records x {args.positions} "
                      f"positions in {took:.1f} s", flush=True)  # fmt: skip
                for pooling in poolings:
                    rates, outputs = {}, {}
                    for name, path in PATHS.items():
                        best = float("inf")
                        for _ in range(args.rounds):
                            started = time.perf_counter()
                            outputs[name] = path(address, model, pooling)
                            best = min(best, time.perf_counter() - started)
                        rates[name] = args.records / best
                    ids, reference = outputs["storage"]
                    for name in ("stream", "shm"):
                        assert outputs[name][0] == ids, f"{name}: another record order"
                        assert np.array_equal(outputs[name][1], reference), f"{name} differs"
                    results.append((hidden, pooling, rates))
                    line = "  ".join(f"{name} {rate:9.1f} rec/s" for name, rate in rates.items())
                    print(f"  {pooling:14s} {line}", flush=True)
        finally:
            proc.terminate()
            proc.wait(30)

    print()
    print(f"{args.records} records x {args.positions} positions, one layer, bfloat16; "
          "vectors identical on all three paths")  # fmt: skip
    print(f"{'hidden':>6}  {'pooling':14s} {'storage':>10} {'stream':>10} {'shm':>10}  "
          f"{'storage/stream':>14} {'storage/shm':>11}")  # fmt: skip
    for hidden, pooling, rates in results:
        print(f"{hidden:6d}  {pooling:14s} {rates['storage']:10.1f} {rates['stream']:10.1f} "
              f"{rates['shm']:10.1f}  {rates['storage'] / rates['stream']:14.1f} "
              f"{rates['storage'] / rates['shm']:11.1f}")  # fmt: skip
    worst = min(r["storage"] / r["stream"] for h, p, r in results if p == "last_prompt")
    print(f"\nlast_prompt, storage / stream (worst hidden size): {worst:.1f}x (target >= 5x)")


if __name__ == "__main__":
    main()
