"""Per-layer statistics of a capture, and how two captures differ (README: Statistics).

`compute_activation_stats`, per layer, over every element of the layer's tensor
(batch x seq x hidden): `mean` of the values, `std` their standard deviation with Bessel's
correction (torch's default, as `tensor.std()`), `norm` the L2 (Frobenius) norm of the whole
tensor; `last_token_norm`, the L2 norm of the last position's vector, is also given since it
does not grow with the prompt's length. Given a contrastive capture, it pools every prompt's
values, positive and negative (`last_token_norm`: the mean over prompts).

`compute_contrastive_diff`, per layer shared by both captures, compares one vector of each:
the last token's hidden state (`position="last"`, the position control vectors read) or the
mean over the prompt's tokens (`position="mean"`): `diff_norm` = ||pos - neg||, `cosine_sim`
= pos·neg / (||pos|| ||neg||). A capture compared with itself gives 0 and 1.
"""

from __future__ import annotations

from typing import Any, Literal

import torch

Position = Literal["last", "mean"]


def compute_activation_stats(data: dict[str, Any]) -> dict[int, dict[str, float]]:
    """{layer: {"mean", "std", "norm", "last_token_norm"}} of one capture, or of every prompt
    of a contrastive capture pooled."""
    captures = [*data["positive"], *data["negative"]] if "positive" in data else [data]
    stats = {}
    for layer in captures[0]["activations"]:
        tensors = [c["activations"][layer].double() for c in captures]
        values = torch.cat([t.reshape(-1) for t in tensors])
        stats[layer] = {
            "mean": values.mean().item(),
            "std": values.std().item() if values.numel() > 1 else 0.0,
            "norm": torch.linalg.vector_norm(values).item(),
            "last_token_norm": float(
                torch.stack([torch.linalg.vector_norm(t[:, -1, :]) for t in tensors]).mean()
            ),
        }
    return stats


def position_vector(tensor: torch.Tensor, position: Position = "last") -> torch.Tensor:
    """The (hidden,) vector of the first batch item a comparison uses."""
    if position == "last":
        return tensor[0, -1, :].double()
    if position == "mean":
        return tensor[0].double().mean(dim=0)
    raise ValueError(f"position must be 'last' or 'mean', not {position!r}")


def compute_contrastive_diff(
    pos_data: dict[str, Any], neg_data: dict[str, Any], position: Position = "last"
) -> dict[int, dict[str, float]]:
    """{layer: {"diff_norm", "cosine_sim"}} for the layers both captures hold."""
    diffs = {}
    for layer in sorted(set(pos_data["activations"]) & set(neg_data["activations"])):
        pos = position_vector(pos_data["activations"][layer], position)
        neg = position_vector(neg_data["activations"][layer], position)
        norms = torch.linalg.vector_norm(pos) * torch.linalg.vector_norm(neg)
        diffs[layer] = {
            "diff_norm": torch.linalg.vector_norm(pos - neg).item(),
            "cosine_sim": (pos @ neg / norms).item() if norms > 0 else 0.0,
        }
    return diffs
