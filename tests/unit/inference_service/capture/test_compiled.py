"""The capture op survives torch.compile: on a small decoder shaped like vLLM's (layers called
as (positions, hidden_states, residual), the first with residual None), compiled with inductor
and fullgraph as vLLM compiles on CPU, the static buffer holds each captured layer's
hidden + residual for the whole batch, while forward hooks registered after compilation never
fire. The op copies only the slots a step wants."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from torch import nn

from inference_service.capture import compiled as compiled_capture

HIDDEN, LAYERS, MAX_TOKENS = 16, 3, 32


class DecoderLayer(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(HIDDEN)
        self.mlp = nn.Linear(HIDDEN, HIDDEN)

    def forward(self, positions, hidden_states, residual):
        residual = hidden_states if residual is None else hidden_states + residual
        return self.mlp(self.norm(residual)) * positions[:, None], residual


class Inner(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed_tokens = nn.Embedding(50, HIDDEN)
        self.layers = nn.ModuleList(DecoderLayer() for _ in range(LAYERS))
        self.norm = nn.LayerNorm(HIDDEN)

    def forward(self, input_ids, positions):
        hidden, residual = self.embed_tokens(input_ids), None
        for layer in self.layers:
            hidden, residual = layer(positions, hidden, residual)
        return self.norm(hidden + residual)


class Model(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.model = Inner()
        self.config = SimpleNamespace(hidden_size=HIDDEN)


def runner_for(model: Model) -> SimpleNamespace:
    return SimpleNamespace(
        get_model=lambda: model,
        vllm_config=SimpleNamespace(
            scheduler_config=SimpleNamespace(max_num_batched_tokens=MAX_TOKENS),
            compilation_config=SimpleNamespace(max_cudagraph_capture_size=0),
        ),
    )


def eager_states(model: Model, ids, positions) -> list[torch.Tensor]:
    """Hidden states numbered as transformers': 0 embeddings, i layer i's h + res."""
    inner = model.model
    hidden, residual = inner.embed_tokens(ids), None
    states = [hidden]
    for layer in inner.layers:
        hidden, residual = type(layer).forward._actlog_original(layer, positions, hidden, residual)
        states.append(hidden + residual)
    return states


@pytest.fixture(scope="module")
def compiled():
    torch.manual_seed(0)
    model = Model().eval()
    static = compiled_capture.build(runner_for(model), {"layers": [0, 2, 3], "num_layers": 3})
    fired = []
    forward = torch.compile(model.model, fullgraph=True, dynamic=True, backend="inductor")
    ids, positions = torch.randint(0, 50, (7,)), torch.arange(7, dtype=torch.float32)
    with torch.no_grad():
        forward(ids, positions)  # traced and compiled here
        for layer in model.model.layers:
            layer.register_forward_hook(lambda *a: fired.append(1))
    return model, static, forward, fired


def test_the_compiled_model_writes_each_captured_layer_for_the_whole_batch(compiled):
    model, static, forward, fired = compiled
    assert static.slot_of == {0: 0, 2: 1}  # 3 = final norm: taken from the output
    ids, positions = torch.randint(0, 50, (11,)), torch.arange(11, dtype=torch.float32)
    static.want({0, 2, 3})
    writes = static.writes()
    with torch.no_grad():
        out = forward(ids, positions)
        expected = eager_states(model, ids, positions)
    static.want_nothing()
    assert static.writes() == writes + 2
    torch.testing.assert_close(static.buffer[0, :11], expected[0], rtol=0, atol=0)
    torch.testing.assert_close(static.buffer[1, :11], expected[2], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out, model.model.norm(expected[3]), rtol=1e-5, atol=1e-5)
    assert fired == [], "decoder layers ran outside the compiled graph"


def test_slots_no_request_wants_are_not_copied(compiled):
    model, static, forward, _ = compiled
    static.buffer.zero_()
    static.want({2})
    writes = static.writes()
    with torch.no_grad():
        forward(torch.randint(0, 50, (5,)), torch.arange(5, dtype=torch.float32))
    static.want_nothing()
    assert static.writes() == writes + 1
    assert static.buffer[0].abs().sum() == 0 and static.buffer[1, :5].abs().sum() > 0


def test_a_model_without_the_layer_contract_is_refused():
    class Other(nn.Module):
        def forward(self, hidden_states):
            return hidden_states

    model = Model()
    model.model.layers = nn.ModuleList([Other() for _ in range(LAYERS)])
    with pytest.raises(compiled_capture.UnsupportedModel, match="ENFORCE_EAGER=true"):
        compiled_capture.build(runner_for(model), {"layers": [1], "num_layers": 3})
