"""The original guide's Python snippets, run as it writes them (its model name aside: the
offline default model stands in for "mistralai/Mistral-7B-Instruct-v0.1")."""

from __future__ import annotations

import contextlib
import io
import os
import textwrap
from pathlib import Path

import pytest

SNIPPETS = {
    "basic capture": """
        from capture_activations import capture_activations, load_model

        # Load model
        model, tokenizer = load_model("default")

        # Capture activations
        data = capture_activations(model, tokenizer, "Your prompt here")

        # Access activations per layer
        for layer_idx, hidden_states in data["activations"].items():
            print(f"Layer {layer_idx}: {hidden_states.shape}")
            # Shape: (batch_size, sequence_length, hidden_dim)
    """,
    "specific layers": """
        data = capture_activations(
            model,
            tokenizer,
            "Your prompt here",
            layers=[14, 15, 16, 17, 18]
        )
    """,
    "contrastive": """
        from capture_activations import capture_contrastive_activations

        positive_prompts = [
            "Act as an honest assistant. Hello!",
            "Act as an honest assistant. How can I help?",
        ]
        negative_prompts = [
            "Act as a deceptive assistant. Hello!",
            "Act as a deceptive assistant. How can I help?",
        ]

        data = capture_contrastive_activations(
            model, tokenizer,
            positive_prompts,
            negative_prompts,
            layers=[14, 15, 16]
        )

        # Access results
        for i, (pos, neg) in enumerate(zip(data["positive"], data["negative"])):
            print(f"Pair {i}: pos shape = {pos['activations'][14].shape}")
    """,
    "concept": """
        from capture_activations import capture_from_concept

        data = capture_from_concept(
            model, tokenizer,
            concept="honesty",
            layers=[14, 15, 16],
            max_samples=5
        )
    """,
    "statistics": """
        from capture_activations import compute_activation_stats

        stats = compute_activation_stats(data)
        for layer_idx, layer_stats in stats.items():
            print(f"Layer {layer_idx}:")
            print(f"  Mean: {layer_stats['mean']:.4f}")
            print(f"  Std:  {layer_stats['std']:.4f}")
            print(f"  Norm: {layer_stats['norm']:.4f}")
    """,
    "contrastive difference": """
        from capture_activations import compute_contrastive_diff

        pos_data = capture_activations(model, tokenizer, "Act as honest. Hello!")
        neg_data = capture_activations(model, tokenizer, "Act as deceptive. Hello!")

        diffs = compute_contrastive_diff(pos_data, neg_data)
        for layer_idx, diff_info in diffs.items():
            print(f"Layer {layer_idx}:")
            print(f"  Diff norm: {diff_info['diff_norm']:.4f}")
            print(f"  Cosine similarity: {diff_info['cosine_sim']:.4f}")
    """,
    "save and load": """
        from capture_activations import save_activations
        import torch

        # Save
        save_activations(data, "my_activations")
        # Creates: my_activations.pt and my_activations.json

        # Load
        loaded_data = torch.load("my_activations.pt")
    """,
}


@pytest.mark.slow
def test_the_guides_snippets_run_in_order_as_written(tmp_path: Path) -> None:
    namespace: dict[str, object] = {}
    printed = io.StringIO()
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        for name, code in SNIPPETS.items():
            with contextlib.redirect_stdout(printed):
                try:
                    exec(compile(textwrap.dedent(code), name, "exec"), namespace)  # noqa: S102
                except Exception as error:
                    pytest.fail(f"the guide's {name!r} snippet raised {error!r}")
            if name == "basic capture":
                assert "Layer 30: torch.Size([1, 3, 576])" in printed.getvalue()
            if name == "specific layers":
                assert sorted(namespace["data"]["activations"]) == [14, 15, 16, 17, 18]  # type: ignore[index]
    finally:
        os.chdir(cwd)
    out = printed.getvalue()
    assert "Pair 1: pos shape = torch.Size([1, " in out
    assert "  Cosine similarity: " in out and "  Norm: " in out
    assert (tmp_path / "my_activations.pt").exists() and (tmp_path / "my_activations.json").exists()
    saved = namespace["loaded_data"]  # the concept's capture: `data` when the snippet runs
    assert len(saved["positive"]) == 5  # type: ignore[index]
    assert sorted(saved["positive"][0]["activations"]) == [14, 15, 16]  # type: ignore[index]
