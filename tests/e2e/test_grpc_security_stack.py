"""The whole stack with mutual TLS and a shared token between its services, configured only by
GRPC_TLS_CERT, GRPC_TLS_KEY, GRPC_TLS_CA and GRPC_AUTH_TOKEN as the launcher passes them: a
completion through the gateway is captured and stored over the secured links, the real client
reads it with the same settings, and a local process without them cannot reach inference
around the gateway. This engine computes in bfloat16 (what the defaults pick on a CPU with
native bfloat16), so the suite also checks bf16 capture against transformers."""

from __future__ import annotations

import grpc
import openai
import pytest

from actlog.client import StorageClient
from actlog.launcher import Stack, StackConfig, free_port
from actlog_common.grpc_security import GrpcSecurity
from actlog_common.hashing import prompt_hash
from actlog_common.v1 import inference_pb2, inference_pb2_grpc
from tests.conftest import ENGINE_ENV, stopped_after
from tests.integration.helpers import TOKEN, make_pki
from tests.reference import load_reference, record_mismatches

pytestmark = pytest.mark.vllm


@pytest.fixture(scope="module")
def secured_stack(tmp_path_factory, model_dir):
    tmp = tmp_path_factory.mktemp("secured-stack")
    pki = make_pki(tmp)
    security = {
        "GRPC_TLS_CERT": str(pki["service_cert"]), "GRPC_TLS_KEY": str(pki["service_key"]),
        "GRPC_TLS_CA": str(pki["ca"]), "GRPC_AUTH_TOKEN": TOKEN,
    }  # fmt: skip
    config = StackConfig(
        gateway_port=free_port(), inference_port=free_port(), inference_metrics_port=free_port(),
        storage_port=free_port(), storage_metrics_port=free_port(),
        activation_lmdb_path=str(tmp / "lmdb"), capture_spool_dir=str(tmp / "spool"),
        dtype="bfloat16", log_dir=str(tmp / "logs"), extra_env={**ENGINE_ENV, **security},
    )  # fmt: skip
    stack = Stack(config)
    stack.start()
    with stopped_after(stack, tmp / "logs"):
        stack.wait_healthy(timeout=900)
        yield stack, GrpcSecurity.from_env(security), pki


def test_capture_travels_the_secured_links_exactly_in_bf16(secured_stack, model_dir) -> None:
    stack, security, _ = secured_stack
    client = openai.OpenAI(base_url=f"{stack.config.gateway_url}/v1", api_key="k",
                           max_retries=0, timeout=300)  # fmt: skip
    prompt = "A record sent over mutual TLS:"
    reply = client.completions.create(model="SmolLM2-135M-Instruct", prompt=prompt,
                                      max_tokens=6, temperature=0,
                                      extra_body={"capture_layers": [0, 10, 20, -1]})  # fmt: skip
    with StorageClient(stack.config.storage_addr, security=security) as storage:
        [record] = storage.wait_for_record(prompt_hash(prompt), timeout=120)
        assert record.record_id == reply.model_extra["activations"][0]["record_ids"][0]
        activations = storage.get_activations(record)
    assert record.dtype == "bfloat16"
    assert activations[record.num_layers].shape[0] == record.num_positions
    reference = load_reference(model_dir, "bfloat16")
    mismatches = record_mismatches(
        activations, list(record.token_ids), record.num_positions, reference
    )
    assert mismatches == []


def test_inference_refuses_whoever_lacks_the_certificate_or_the_token(secured_stack) -> None:
    stack, security, pki = secured_stack
    request = inference_pb2.ModelInfoRequest()

    def model_info(who: GrpcSecurity) -> grpc.StatusCode | None:
        with who.channel(stack.config.inference_addr) as channel:
            try:
                inference_pb2_grpc.InferenceStub(channel).GetModelInfo(request, timeout=5)
            except grpc.RpcError as exc:
                return exc.code()
        return None

    assert model_info(security) is None
    assert model_info(GrpcSecurity(auth_token=TOKEN)) == grpc.StatusCode.UNAVAILABLE
    tls_only = GrpcSecurity(security.tls_cert, security.tls_key, security.tls_ca)
    assert model_info(tls_only) == grpc.StatusCode.UNAUTHENTICATED
