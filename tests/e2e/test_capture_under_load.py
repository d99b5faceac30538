"""Capture stays exact under everything vLLM does to a batch, inside the compiled model.

A dedicated engine is started on the default capture path of a float32 model (compiled, every
layer available but one) with a small step budget (chunked prefill splits long prompts), a
tiny KV cache (requests get preempted and recomputed) and prefix caching on. (The session
stack runs the same row mapping with forward hooks, eagerly: test_capture_exactness.) Requests
arrive staggered, finish at different steps, ask for different layers (all it compiled in, or
no capture), use n > 1 and stop strings. Every record must equal a transformers forward pass of
its own token ids at every position and layer, with exactly prompt length + generated - 1 rows.
"""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass

import grpc
import pytest

from actlog.launcher import Stack, StackConfig, free_port
from actlog_common.hashing import prompt_hash
from actlog_common.v1 import inference_pb2, inference_pb2_grpc
from tests.conftest import COMPILED_ENV, ENGINE_ENV, NOT_COMPILED_IN, stopped_after
from tests.reference import record_mismatches

pytestmark = pytest.mark.vllm

# fp32 SmolLM2: 30 layers x 2 x 3 KV heads x 64 x 4 bytes = 46 KB per token; 128-token blocks.
KV_BYTES = 20 * 128 * 46_080  # 20 blocks: 2,560 tokens for up to 32 requests at once
STEP_TOKENS = 96  # prompts longer than this are always split over several steps

SHARED_PREFIX = (
    "You are a careful assistant. Answer briefly and precisely, and say when you do not "
    "know. The following questions come from a quiz about geography, history and science; "
    "each answer should be one short sentence without any extra commentary or preamble. "
) * 3


COMPILED_IN = [i for i in range(31) if i != NOT_COMPILED_IN]


@pytest.fixture(scope="module")
def stress_engine(stack, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("stress")
    config = StackConfig(
        inference_port=free_port(),
        inference_metrics_port=free_port(),
        storage_port=stack.config.storage_port,
        dtype="float32",
        log_dir=str(tmp / "logs"),
        extra_env={
            **ENGINE_ENV,
            "VLLM_CPU_KVCACHE_SPACE": "",  # let KV_CACHE_MEMORY_BYTES decide
            "KV_CACHE_MEMORY_BYTES": str(KV_BYTES),
            "ENABLE_CHUNKED_PREFILL": "true",
            "MAX_NUM_BATCHED_TOKENS": str(STEP_TOKENS),
            "MAX_NUM_SEQS": "32",
            "ENABLE_PREFIX_CACHING": "true",
            "CAPTURE_SPOOL_DIR": str(tmp / "spool"),
            **COMPILED_ENV,
        },
    )
    engine = Stack(config)
    engine.start_service("inference")
    with stopped_after(engine, tmp / "logs"):
        engine.wait_healthy(timeout=900, names=("inference",))
        yield config.inference_addr


@dataclass
class Job:
    prompt: str
    layers: list[int] | str | None  # None = capture off
    max_tokens: int
    n: int = 1
    stop: tuple[str, ...] = ()
    temperature: float = 0.0
    ignore_eos: bool = False
    delay: float = 0.0


async def run_job(stub, job: Job) -> list[inference_pb2.GenerateResult]:
    await asyncio.sleep(job.delay)
    capture = inference_pb2.CaptureOptions(enabled=job.layers is not None)
    if isinstance(job.layers, str):
        capture.preset = job.layers
    elif job.layers:
        capture.layers.extend(job.layers)
    request = inference_pb2.GenerateRequest(
        prompt=job.prompt,
        sampling=inference_pb2.SamplingParams(
            max_tokens=job.max_tokens,
            temperature=job.temperature,
            n=job.n,
            stop=job.stop,
            ignore_eos=job.ignore_eos,
        ),
        capture=capture,
    )
    results = [m.result async for m in stub.Generate(request, timeout=600) if m.HasField("result")]
    return sorted(results, key=lambda r: r.index)


def run_jobs(address: str, jobs: list[Job]) -> list[list[inference_pb2.GenerateResult]]:
    async def main():
        async with grpc.aio.insecure_channel(address) as channel:
            stub = inference_pb2_grpc.InferenceStub(channel)
            return await asyncio.gather(*(run_job(stub, j) for j in jobs))

    return asyncio.run(main())


def engine_status(address: str, worker: bool = False) -> inference_pb2.ServiceStatus:
    with grpc.insecure_channel(address) as channel:
        return inference_pb2_grpc.InferenceStub(channel).GetStatus(
            inference_pb2.StatusRequest(worker_counters=worker), timeout=30
        )


def check_records(storage, reference, jobs, results) -> int:
    """Every captured choice is stored, complete, with its own exact rows. Returns #records."""
    checked = 0
    for job, choices in zip(jobs, results, strict=True):
        assert len(choices) == job.n
        if job.layers is None:
            assert all(not r.record_id for r in choices)
            assert storage.find_by_prompt_hash(prompt_hash(job.prompt)) == []
            continue
        stored = {
            r.record_id: r
            for r in storage.wait_for_record(prompt_hash(job.prompt), count=job.n, timeout=300)
        }
        for choice in choices:
            record = stored[choice.record_id]
            generated = len(choice.output_token_ids)
            assert record.status == "COMPLETE"
            assert list(record.token_ids) == [*choice.prompt_token_ids, *choice.output_token_ids]
            assert record.num_positions == record.prompt_length + generated - 1
            assert record.response == choice.text
            assert record.choice_index == choice.index
            activations = storage.get_activations(record.record_id)
            assert sorted(activations) == list(choice.layers)
            for rows in activations.values():
                assert rows.shape == (record.num_positions, record.hidden_size)
            problems = record_mismatches(
                activations, list(record.token_ids), record.num_positions, reference
            )
            assert problems == [], f"{job.prompt[:40]!r} choice {choice.index}: {problems[:5]}"
            checked += 1
    return checked


def mixed_jobs(seed: int = 7) -> list[Job]:
    rng = random.Random(seed)
    topics = [
        "volcanoes",
        "the Roman empire",
        "photosynthesis",
        "jazz",
        "glaciers",
        "chess",
        "the printing press",
        "honeybees",
        "tides",
        "the Silk Road",
        "comets",
        "coral",
    ]
    layer_sets: list[list[int] | str | None] = [
        [-1],
        [0, 30],
        [5, 10, 15],
        "recommended",
        [29, -1],
        [3, -3],
        None,
        [1, 2, 3, 4],
        COMPILED_IN,
    ]
    jobs = []
    for i in range(32):
        topic = topics[i % len(topics)]
        if i % 4 == 0:
            # Long prompts: split by chunked prefill over several steps.
            prompt = f"[{i}] " + " ".join(f"Fact {k} about {topic}." for k in range(40))
        elif i % 4 == 1:
            prompt = f"{SHARED_PREFIX}Question {i}: what do you know about {topic}?"
        else:
            prompt = f"[{i}] Tell me something about {topic}."
        jobs.append(
            Job(
                prompt=prompt,
                layers=layer_sets[i % len(layer_sets)],
                max_tokens=rng.randint(4, 40),
                n=3 if i % 8 == 3 else 1,
                temperature=0.8 if i % 8 == 3 else 0.0,
                stop=(".",) if i % 5 == 2 else (),
                ignore_eos=i % 3 == 0,
                delay=rng.random() * 2.0,
            )
        )
    return jobs


def test_32_concurrent_mixed_requests_are_each_exact(stress_engine, storage, reference_fp32):
    jobs = mixed_jobs()
    results = run_jobs(stress_engine, jobs)
    # Stop strings cut the text, and n > 1 gave distinct choices.
    stopped = [r for j, rs in zip(jobs, results, strict=True) if j.stop for r in rs]
    assert all("." not in r.text for r in stopped)
    assert any(r.finish_reason == "stop" for r in stopped)
    sampled = [rs for j, rs in zip(jobs, results, strict=True) if j.n > 1]
    assert any(len({tuple(r.output_token_ids) for r in rs}) > 1 for rs in sampled)
    checked = check_records(storage, reference_fp32, jobs, results)
    assert checked >= 30


def test_preemption_under_a_tiny_kv_cache_stays_exact(stress_engine, storage, reference_fp32):
    before = engine_status(stress_engine).recomputed_rows
    jobs = [
        Job(
            prompt=f"[p{i}] " + " ".join(f"Step {k}: keep counting upwards." for k in range(25)),
            layers=[0, 12, -1],
            max_tokens=140,
            ignore_eos=True,
        )
        for i in range(10)
    ]
    results = run_jobs(stress_engine, jobs)
    status = engine_status(stress_engine)
    assert status.recomputed_rows > before, "the KV cache was meant to force preemption"
    check_records(storage, reference_fp32, jobs, results)


def test_prefix_cache_hits_do_not_hide_rows(stress_engine, storage, reference_fp32):
    # Uncaptured requests fill the prefix cache first; captured ones with the same prefix
    # must still get every row, computed, not skipped.
    warm = [Job(prompt=f"{SHARED_PREFIX}Warm-up {i}.", layers=None, max_tokens=2) for i in range(3)]
    run_jobs(stress_engine, warm)
    jobs = [
        Job(prompt=f"{SHARED_PREFIX}Cached question {i}: name a river.", layers=[0, 20, -1],
            max_tokens=8)
        for i in range(4)
    ] + [Job(prompt=f"{SHARED_PREFIX}Uncaptured {i}.", layers=None, max_tokens=4)
         for i in range(4)]  # fmt: skip
    results = run_jobs(stress_engine, jobs)
    assert check_records(storage, reference_fp32, jobs, results) == 4


def test_the_rows_came_from_inside_the_compiled_graph(stress_engine):
    """ENFORCE_EAGER=false compiled this float32 engine; the op in the graph wrote the rows,
    and no layer hook ever fired (a layer that ran outside the graph would have)."""
    status = engine_status(stress_engine, worker=True)
    assert status.capture_path == "compiled"
    assert status.compile_mode == "DYNAMO_TRACE_ONCE" and status.compiled_graphs >= 1
    assert list(status.available_layers) == COMPILED_IN
    worker = status.worker
    assert worker.capture_steps > 0 and worker.frames > 0 and worker.graph_writes > 0
    assert worker.layer_hook_calls == 0, "a layer ran outside the compiled graph"


@pytest.mark.parametrize("layers", [[NOT_COMPILED_IN], [0, NOT_COMPILED_IN, -1], "all"])
def test_a_layer_that_was_not_compiled_in_is_refused(stress_engine, layers):
    with pytest.raises(grpc.RpcError) as refused:
        run_jobs(stress_engine, [Job(prompt="Hello there.", layers=layers, max_tokens=2)])
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    message = refused.value.details()
    assert f"[{NOT_COMPILED_IN}]" in message and "CAPTURE_LAYERS_AVAILABLE" in message
    # Nothing was generated, and the engine serves the next request.
    [[ok]] = run_jobs(stress_engine, [Job(prompt="Hello again.", layers=[-1], max_tokens=2)])
    assert ok.record_id
