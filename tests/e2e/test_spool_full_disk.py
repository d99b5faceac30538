"""A full spool disk never loses a promised record: the spool's own disk is a 16 MB tmpfs,
filled by another file to just below or above what a capture needs. A capture's files are
allocated whole before generation, so a request is either refused up front (503, a stream's
HTTP error) or its record is spooled whole; a disk that fills while it runs cannot touch it.
A refused request, or a refused batch, leaves nothing: no record, no reservation, no partial
folder."""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import threading
import time
from pathlib import Path

import httpx
import openai
import pytest

from actlog.client import StorageClient
from actlog.launcher import Stack, StackConfig
from tests.conftest import ENGINE_ENV, stopped_after

pytestmark = pytest.mark.vllm

TMPFS_BYTES = 16 << 20
PROMPT = "The spool's disk is nearly full, so"
FILLER = "filler.bin"
RUNS = 20
CAPTURE_MAX_BYTES = 40_000_000
SWEEP = 64 << 10  # free space from reservation - 64 KiB to reservation + 64 KiB


@pytest.fixture(scope="module")
def small_disk_stack(tmp_path_factory, model_dir):
    tmp = tmp_path_factory.mktemp("spool-disk")
    spool = tmp / "spool"
    spool.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={TMPFS_BYTES}", "tmpfs", str(spool)],
        capture_output=True, text=True,
    )  # fmt: skip
    if mounted.returncode:
        pytest.skip(f"a tmpfs for the spool cannot be mounted here: {mounted.stderr.strip()}")
    try:
        # A cap that a batch's long prompt exceeds at its share (half of it), and that a
        # short prompt's capture of every layer is well within.
        env = {**ENGINE_ENV, "CAPTURE_MAX_BYTES": str(CAPTURE_MAX_BYTES)}
        stack = Stack(StackConfig.on_free_ports(tmp, dtype="float32", extra_env=env))
        stack.start()
        with stopped_after(stack, tmp / "logs"):
            stack.wait_healthy(timeout=900)
            yield stack
    finally:
        subprocess.run(["umount", "-l", str(spool)], check=False)


def spool_dir(stack: Stack) -> Path:
    return Path(stack.config.capture_spool_dir)


def health(stack: Stack) -> dict:
    return httpx.get(f"{stack.config.gateway_url}/health", timeout=10).json()["inference"]


def fill_to(stack: Stack, free: int) -> None:
    """Leave `free` bytes of the spool's disk free, with a file beside the records."""
    filler = spool_dir(stack) / FILLER
    with contextlib.suppress(FileNotFoundError):
        filler.unlink()
    size = os.statvfs(spool_dir(stack)).f_bavail * os.statvfs(spool_dir(stack)).f_frsize - free
    if size > 0:
        fd = os.open(filler, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            os.posix_fallocate(fd, 0, size)
        finally:
            os.close(fd)


def free_bytes(stack: Stack) -> int:
    st = os.statvfs(spool_dir(stack))
    return st.f_bavail * st.f_frsize


def drained(stack: Stack, timeout: float = 120) -> None:
    """Wait until every finished record has left the spool for storage."""
    deadline = time.monotonic() + timeout
    while (h := health(stack))["spool_records"] or h["pending_captures"]:
        assert time.monotonic() < deadline, f"the spool does not drain: {h}"
        time.sleep(0.1)


def assert_nothing_left(stack: Stack) -> None:
    h = health(stack)
    assert h["spool_reserved_bytes"] == 0, h
    assert h["pending_captures"] == 0, h
    assert not list(spool_dir(stack).glob("*.partial")), "a partial folder stayed"


def client_of(stack: Stack) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{stack.config.gateway_url}/v1", api_key="k",
                         max_retries=0, timeout=300)  # fmt: skip


def complete(client: openai.OpenAI, model: str, stream: bool) -> list[str]:
    """Record ids the answer names; raises APIStatusError when it is refused."""
    body = {"capture_layers": "all", "ignore_eos": True}
    if not stream:
        reply = client.completions.create(model=model, prompt=PROMPT, max_tokens=64,
                                          temperature=0, extra_body=body)  # fmt: skip
        return reply.model_extra["activations"][0]["record_ids"]
    ids: list[str] = []
    chunks = client.completions.create(model=model, prompt=PROMPT, max_tokens=64,
                                       temperature=0, stream=True, extra_body=body)  # fmt: skip
    for chunk in chunks:
        for ref in (chunk.model_extra or {}).get("activations") or []:
            ids.extend(ref["record_ids"])
    return ids


def test_free_space_swept_across_the_reservation_refuses_or_spools_whole(small_disk_stack):
    stack = small_disk_stack
    client = client_of(stack)
    model = client.models.list().data[0].id
    # The reservation, as the refusal states it: the request on a disk with nothing free.
    fill_to(stack, 0)
    with pytest.raises(openai.APIStatusError) as refused:
        complete(client, model, stream=False)
    assert refused.value.status_code == 503
    reservation = int(re.search(r"capture \((\d+) bytes\)", refused.value.body["message"])[1])
    rows_only = 31 * 576 * 4 * (64 + 8)  # all layers, float32, 64 tokens and a short prompt
    assert reservation > rows_only * 0.9  # rows, block rounding, header and headroom

    named: list[str] = []
    outcomes = {"stored": 0, "refused": 0}
    for run in range(RUNS):
        delta = -SWEEP + run * (2 * SWEEP) // (RUNS - 1)
        fill_to(stack, reservation + delta)
        assert abs(free_bytes(stack) - (reservation + delta)) < 4096
        stream = run % 2 == 1
        try:
            ids = complete(client, model, stream)
        except openai.APIStatusError as exc:
            assert exc.status_code == 503, exc.body
            assert "capture spool" in exc.body["message"]
            assert delta < 0, f"refused with {delta} bytes above its reservation free"
            outcomes["refused"] += 1
        else:
            assert len(ids) == 1
            named.extend(ids)
            outcomes["stored"] += 1
        (spool_dir(stack) / FILLER).unlink()
        drained(stack)
        assert_nothing_left(stack)
    print(f"sweep of {RUNS} runs around a reservation of {reservation} bytes: {outcomes}")
    assert outcomes["stored"] >= RUNS // 2 - 1 and outcomes["refused"] >= RUNS // 2 - 1
    with StorageClient(stack.config.storage_addr) as storage:
        for record_id in named:
            record = storage.wait_for_record_id(record_id, timeout=60)
            assert record.num_positions == record.prompt_length + 63
            assert len(record.layers) == 31


def test_a_disk_that_fills_during_a_request_does_not_touch_its_record(small_disk_stack):
    stack = small_disk_stack
    client = client_of(stack)
    model = client.models.list().data[0].id
    drained(stack)
    ids: list[str] = []
    filled = threading.Event()

    def fill_for_two_seconds() -> None:
        fill_to(stack, 0)
        filled.set()
        time.sleep(2)
        (spool_dir(stack) / FILLER).unlink()

    filler = None
    tokens = 0
    for chunk in client.completions.create(
        model=model, prompt="Another process fills the disk while", max_tokens=200,
        temperature=0, stream=True,
        extra_body={"capture_layers": [0, 15, -1], "ignore_eos": True},
    ):  # fmt: skip
        tokens += sum(len(c.text) > 0 for c in chunk.choices)
        if filler is None:  # the capture is open: its space was allocated before this
            filler = threading.Thread(target=fill_for_two_seconds)
            filler.start()
            assert filled.wait(10)
        for ref in (chunk.model_extra or {}).get("activations") or []:
            ids.extend(ref["record_ids"])
    filler.join()
    assert len(ids) == 1
    with StorageClient(stack.config.storage_addr) as storage:
        record = storage.wait_for_record_id(ids[0], timeout=60)
        assert record.num_positions == record.prompt_length + 199
        assert record.is_complete
    drained(stack)
    assert_nothing_left(stack)


def test_a_batch_refused_by_the_capture_cap_stores_nothing(small_disk_stack):
    """The second prompt's share of CAPTURE_MAX_BYTES is exceeded (it is much longer); the
    first, short one would have finished first. Neither is stored."""
    stack = small_disk_stack
    client = client_of(stack)
    model = client.models.list().data[0].id
    drained(stack)
    with StorageClient(stack.config.storage_addr) as storage:
        before = storage.stats().records
        long_prompt = "word " * 1500
        for stream in (False, True):
            with pytest.raises(openai.BadRequestError) as refused:
                reply = client.completions.create(
                    model=model, prompt=["Hi", long_prompt], max_tokens=1, stream=stream,
                    extra_body={"capture_layers": "all"},
                )  # fmt: skip
                if stream:
                    list(reply)
            assert "CAPTURE_MAX_BYTES" in refused.value.body["message"]
        time.sleep(2)
        drained(stack)
        assert storage.stats().records == before
    assert_nothing_left(stack)
