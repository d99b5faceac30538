"""Capture in this process with transformers, as the original `capture_activations.py` did.

Two ways to read the hidden states, both numbered as transformers' `output_hidden_states`
(0 = embeddings, i = output of decoder layer i, N = the final-normed output):
- `output_hidden_states=True`: the model returns every layer; the chosen ones are kept.
- forward hooks (`use_hooks`) on the embeddings, the chosen decoder layers and the final
  norm: only the chosen layers are ever held, and the forward stops short of the LM head.
Both give the same tensors (tests/research/test_capture_api.py).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from actlog_common.default_model import is_default, prepare_default_model

logger = logging.getLogger(__name__)

TORCH_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def load_model(
    model_name: str = "default", dtype: str = "float32", device: str | None = None
) -> tuple[Any, Any]:
    """(model, tokenizer) of a hub id or a local directory; "default" is the offline model.

    On CPU float32 is both the fastest and the exact choice; `dtype` may ask for bfloat16.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if dtype not in TORCH_DTYPES:
        raise ValueError(f"dtype must be one of {sorted(TORCH_DTYPES)}, not {dtype!r}")
    path = str(prepare_default_model()) if is_default(model_name) else model_name
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=TORCH_DTYPES[dtype])
    model.to(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    model.eval()
    return model, tokenizer


def num_decoder_layers(model: Any) -> int:
    return int(model.config.num_hidden_layers)


def model_name_of(model: Any) -> str:
    """The name a model was loaded by: a hub id, or a local directory's name."""
    name = str(getattr(model.config, "_name_or_path", "") or model.config.model_type)
    return Path(name).name if Path(name).is_dir() else name


def _decoder(model: Any) -> Any:
    """The decoder stack (embeddings, layers, final norm) under the LM head."""
    inner = getattr(model, "model", None) or model.base_model
    for part in ("embed_tokens", "layers", "norm"):
        if not hasattr(inner, part):
            raise ValueError(
                f"--use-hooks needs a decoder with embed_tokens, layers and norm "
                f"(Llama, Mistral, Qwen...); {type(model).__name__} has no {part!r}"
            )
    return inner


@contextmanager
def _hooks(model: Any, layers: list[int], kept: dict[int, torch.Tensor]) -> Iterator[None]:
    """Forward hooks that keep hidden state i of each chosen layer in `kept`."""
    decoder = _decoder(model)
    n = num_decoder_layers(model)

    def keep(index: int) -> Any:
        def hook(module: Any, args: Any, output: Any) -> None:
            kept[index] = (output[0] if isinstance(output, tuple) else output).detach()

        return hook

    handles = []
    for index in layers:
        if index == 0:
            module = decoder.embed_tokens
        elif index == n:
            module = decoder.norm  # transformers' last hidden state is the normed one
        else:
            module = decoder.layers[index - 1]
        handles.append(module.register_forward_hook(keep(index)))
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def forward_hidden_states(
    model: Any, input_ids: torch.Tensor, layers: list[int], use_hooks: bool = False
) -> dict[int, torch.Tensor]:
    """Hidden states {layer: (batch, seq, hidden)} of `input_ids` at the chosen layers."""
    device = next(model.parameters()).device
    input_ids = input_ids.to(device)
    with torch.no_grad():
        if use_hooks:
            kept: dict[int, torch.Tensor] = {}
            with _hooks(model, layers, kept):
                _decoder(model)(input_ids=input_ids)  # no LM head: nothing but the states
            return {layer: kept[layer] for layer in layers}
        out = model(input_ids=input_ids, output_hidden_states=True)
        return {layer: out.hidden_states[layer] for layer in layers}


def token_strings(tokenizer: Any, ids: list[int]) -> list[str]:
    """Each token as text on its own, as records store them ("<s>", "Hello", ...)."""
    return [tokenizer.decode([token]) for token in ids]
