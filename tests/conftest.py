"""Shared fixtures: one real stack (storage, vLLM inference, gateway) per test session.

The tiers run fastest first (unit, integration, research, e2e), and when the session needs
the shared stack it is started as soon as collection ends, so that vLLM loads while the
fast tiers run.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from actlog.launcher import Stack, StackConfig

ROOT = Path(__file__).resolve().parents[1]
TIERS = ("unit", "integration", "research", "e2e")
# The shared stack, started early by pytest_collection_finish (with its directory).
_early: dict[str, tuple[Stack, Path]] = {}

# Two engines may run at once (the float32 session stack and a bf16 one): keep each small.
# They run eagerly (forward hooks), as they start in a quarter of the time of a compiled
# engine; the compiled path, the default for float32, has the stress engine
# (test_capture_under_load).
ENGINE_ENV = {
    "VLLM_CPU_KVCACHE_SPACE": "1",
    "GPU_MEMORY_UTILIZATION": "0.3",
    "MAX_MODEL_LEN": "2048",
    "VLLM_LOGGING_LEVEL": "WARNING",
    "ENFORCE_EAGER": "true",
}
# Laid over ENGINE_ENV: the compiled capture path (the default on CUDA; ENFORCE_EAGER=false on
# CPU), with every layer available but one, so that a refusal can be seen too.
NOT_COMPILED_IN = 27
COMPILED_ENV = {
    "ENFORCE_EAGER": "false",
    "CAPTURE_LAYERS_AVAILABLE": ",".join(str(i) for i in range(31) if i != NOT_COMPILED_IN),
}


def stack_config(tmp: Path, dtype: str, env: dict[str, str] | None = None) -> StackConfig:
    return StackConfig.on_free_ports(tmp, dtype=dtype, extra_env=dict(env or ENGINE_ENV))


@contextmanager
def stopped_after(stack: Stack, log_dir: Path) -> Iterator[None]:
    """Stop `stack` when the block ends; when it fails, print each service log's tail first."""
    try:
        yield
    except BaseException:
        for log in sorted(log_dir.glob("*.log")):
            print(f"==== {log.name}\n{log.read_text()[-4000:]}")
        raise
    finally:
        stack.stop()


@pytest.fixture(scope="session")
def model_dir() -> str:
    from actlog_common.default_model import prepare_default_model

    return str(prepare_default_model())


def _start_shared_stack() -> tuple[Stack, Path]:
    from actlog_common.default_model import prepare_default_model

    prepare_default_model()
    tmp = Path(tempfile.mkdtemp(prefix="actlog-stack-"))
    running = Stack(stack_config(tmp, "float32"))
    running.start()
    return running, tmp


@pytest.fixture(scope="session")
def stack(model_dir: str) -> Iterator[Stack]:
    """The whole stack on the default model, in float32 (exact comparisons; 3x faster on CPU),
    capturing eagerly. Started when collection ended if the session needs it."""
    running, tmp = _early.pop("stack", None) or _start_shared_stack()
    try:
        with stopped_after(running, tmp / "logs"):
            running.wait_healthy(timeout=900)
            yield running
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture(scope="session")
def openai_client(stack: Stack):
    import openai

    # Clients send a bearer token even when none is configured: any value must be accepted.
    return openai.OpenAI(
        base_url=f"{stack.config.gateway_url}/v1", api_key="unused", max_retries=0, timeout=300
    )


@pytest.fixture(scope="session")
def served_model(openai_client) -> str:
    return openai_client.models.list().data[0].id


@pytest.fixture(scope="session")
def storage(stack: Stack):
    from actlog.client import StorageClient

    with StorageClient(stack.config.storage_addr) as client:
        yield client


@pytest.fixture(scope="session")
def reference_fp32(model_dir: str):
    from tests.reference import load_reference

    return load_reference(model_dir, "float32")


def pytest_configure(config: pytest.Config) -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def _tier(item: pytest.Item) -> int:
    try:
        name = Path(str(item.path)).relative_to(ROOT / "tests").parts[0]
    except ValueError:
        return len(TIERS)
    return TIERS.index(name) if name in TIERS else len(TIERS)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    items.sort(key=_tier)  # stable: the order within a tier stays the files' own


def pytest_collection_finish(session: pytest.Session) -> None:
    config = session.config
    if config.option.collectonly or not any("stack" in i.fixturenames for i in session.items):
        return
    if _tier(session.items[0]) < TIERS.index("e2e"):  # there is something to overlap
        _early["stack"] = _start_shared_stack()


def pytest_sessionfinish(session: pytest.Session) -> None:
    # Never used (the tests that wanted it were deselected or failed first): stop it.
    early = _early.pop("stack", None)
    if early is not None:
        early[0].stop()
        shutil.rmtree(early[1], ignore_errors=True)
