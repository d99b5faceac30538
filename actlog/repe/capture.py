"""The original tool's API: capture one prompt, contrastive pairs or a concept's pairs.

Every function takes the in-process `(model, tokenizer)` from `load_model`, or
`server="http://host:8000"` (then model and tokenizer may be None): the same results either
way, in one structure:

    {"activations": {layer: tensor(batch=1, seq, hidden)}, "input_ids": tensor(1, seq),
     "tokens": [...], "prompt": "...", "num_layers": N, "captured_layers": [...],
     "model": "...", "engine": "transformers" | "served", "record_id": "..." (served)}

Layers are hidden-state indices (0 = embeddings ... N = final-normed output; negative count
from the end), a preset ("all", "last", "recommended" = 45%-85% of depth) or None (all).
Activations come back as float32 whatever the model's dtype.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from tqdm import tqdm

from actlog.repe.inprocess import (
    forward_hidden_states,
    load_model,
    model_name_of,
    num_decoder_layers,
    token_strings,
)
from actlog.repe.pairs import ContrastDataset, load_concept, load_pairs_file
from actlog.repe.served import ServedCapture, ServedStack
from actlog_common.defaults import STORAGE_ADDR
from actlog_common.layers import LayerSpec

__all__ = [
    "capture_activations",
    "capture_contrastive_activations",
    "capture_from_concept",
    "capture_prompts",
    "load_model",
]

Layers = Sequence[int] | str | None
Server = str | ServedStack | None


def layer_spec(layers: Layers) -> tuple[list[int], str]:
    """(indices, preset) of a layer choice; None means every layer."""
    spec = LayerSpec.parse(layers, default="all")
    return list(spec.indices), spec.preset


@contextmanager
def _stack(server: str | ServedStack) -> Iterator[ServedStack]:
    if isinstance(server, ServedStack):
        yield server
        return
    with ServedStack(server, os.environ.get("STORAGE_ADDR", STORAGE_ADDR)) as stack:
        yield stack


def capture_prompts(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[str],
    layers: Layers = None,
    use_hooks: bool = False,
    server: Server = None,
    progress: bool = True,
) -> list[dict[str, Any]]:
    """One result (the structure above) per prompt, in order; served prompts are batched."""
    if server is not None:
        with _stack(server) as stack:
            indices, preset = layer_spec(layers)
            captures = stack.capture(list(prompts), preset or indices, progress=progress)
            return [_served_result(capture, stack.model) for capture in captures]
    if model is None or tokenizer is None:
        raise ValueError("give a model and tokenizer (load_model) or server=URL")
    chosen = LayerSpec.parse(layers, default="all").choose(num_decoder_layers(model))
    return [
        _inprocess_result(model, tokenizer, prompt, chosen, use_hooks)
        for prompt in tqdm(prompts, desc="prompts", unit="prompt", disable=not progress)
    ]


def capture_activations(
    model: Any,
    tokenizer: Any,
    prompt: str,
    layers: Layers = None,
    use_hooks: bool = False,
    server: Server = None,
) -> dict[str, Any]:
    """Hidden states of every token of `prompt` at the chosen layers."""
    return capture_prompts(model, tokenizer, [prompt], layers, use_hooks, server, False)[0]


def capture_contrastive_activations(
    model: Any,
    tokenizer: Any,
    positive_prompts: Sequence[str],
    negative_prompts: Sequence[str],
    layers: Layers = None,
    use_hooks: bool = False,
    server: Server = None,
) -> dict[str, Any]:
    """{"positive": [result...], "negative": [result...]} with pair k at index k of both."""
    if len(positive_prompts) != len(negative_prompts):
        raise ValueError(
            f"{len(positive_prompts)} positive prompts but {len(negative_prompts)} negative: "
            "pairs need one of each"
        )
    if not positive_prompts:
        raise ValueError("no prompt pairs to capture")
    both = capture_prompts(
        model, tokenizer, [*positive_prompts, *negative_prompts], layers, use_hooks, server
    )
    n = len(positive_prompts)
    first = both[0]
    return {
        "positive": both[:n],
        "negative": both[n:],
        "num_layers": first["num_layers"],
        "captured_layers": first["captured_layers"],
        "model": first["model"],
        "engine": first["engine"],
    }


def capture_from_concept(
    model: Any,
    tokenizer: Any,
    concept: str = "honesty",
    layers: Layers = None,
    max_samples: int | None = None,
    use_hooks: bool = False,
    server: Server = None,
    concept_file: str | None = None,
) -> dict[str, Any]:
    """Contrastive capture of a shipped concept's pairs, or of a JSONL file of your own."""
    dataset = concept_dataset(concept, concept_file).head(max_samples)
    data = capture_contrastive_activations(
        model,
        tokenizer,
        [pair.positive for pair in dataset.pairs],
        [pair.negative for pair in dataset.pairs],
        layers,
        use_hooks,
        server,
    )
    data["concept"] = dataset.name
    data["dataset_sha256"] = dataset.sha256
    return data


def concept_dataset(concept: str | None, concept_file: str | None) -> ContrastDataset:
    if concept_file:
        return load_pairs_file(concept_file)
    if not concept:
        raise ValueError("name a concept or a concept file")
    return load_concept(concept)


def _inprocess_result(
    model: Any, tokenizer: Any, prompt: str, layers: list[int], use_hooks: bool
) -> dict[str, Any]:
    input_ids = tokenizer(prompt, return_tensors="pt")["input_ids"]
    states = forward_hidden_states(model, input_ids, layers, use_hooks)
    return {
        "activations": {layer: states[layer].float().cpu() for layer in layers},
        "input_ids": input_ids.cpu(),
        "tokens": token_strings(tokenizer, input_ids[0].tolist()),
        "prompt": prompt,
        "num_layers": num_decoder_layers(model),
        "captured_layers": list(layers),
        "model": model_name_of(model),
        "engine": "transformers",
    }


def _served_result(capture: ServedCapture, model: str) -> dict[str, Any]:
    record = capture.record
    n = record.prompt_length
    layers = sorted(capture.activations)
    return {
        "activations": {
            layer: torch.from_numpy(capture.activations[layer]).unsqueeze(0) for layer in layers
        },
        "input_ids": torch.tensor([list(record.token_ids[:n])], dtype=torch.long),
        "tokens": list(record.token_strings[:n]),
        "prompt": record.prompt,
        "num_layers": record.num_layers,
        "captured_layers": layers,
        "model": record.model or model,
        "engine": "served",
        "record_id": record.record_id,
    }
