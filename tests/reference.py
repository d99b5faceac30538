"""The yardstick for captured activations: a transformers forward pass of the same token ids.

Row p of a record is the residual stream at token p, so the reference for a record is
`hidden_states[layer][0, :num_positions]` of a forward pass over its token ids (prompt +
generated, minus the last generated token, which was never fed back).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Acceptance thresholds from the issue: float32 relative error per row, bf16 cosine per row.
FP32_MAX_REL_ERR = 1e-3
BF16_MIN_COSINE = 0.99


@dataclass
class Reference:
    model: object
    dtype: str

    def hidden_states(self, token_ids: list[int]) -> list[np.ndarray]:
        import torch

        ids = torch.tensor([token_ids])
        with torch.no_grad():
            out = self.model(ids, output_hidden_states=True)  # type: ignore[operator]
        return [h[0].float().numpy() for h in out.hidden_states]


def load_reference(model_dir: str, dtype: str) -> Reference:
    import torch
    from transformers import AutoModelForCausalLM

    torch_dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}[dtype]
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch_dtype)
    model.eval()
    return Reference(model, dtype)


def row_mismatches(stored: np.ndarray, reference: np.ndarray, dtype: str) -> list[str]:
    """Rows where `stored` does not match `reference` within the dtype's tolerance."""
    if stored.shape != reference.shape:
        return [f"shape {stored.shape} != reference {reference.shape}"]
    stored = stored.astype(np.float64)
    reference = reference.astype(np.float64)
    ref_norm = np.linalg.norm(reference, axis=1)
    if dtype == "float32":
        score = np.linalg.norm(stored - reference, axis=1) / np.maximum(ref_norm, 1e-12)
        bad = np.nonzero(score > FP32_MAX_REL_ERR)[0]
        return [f"row {r}: relative error {score[r]:.2e}" for r in bad]
    cosine = (stored * reference).sum(axis=1) / np.maximum(
        np.linalg.norm(stored, axis=1) * ref_norm, 1e-12
    )
    bad = np.nonzero(cosine < BF16_MIN_COSINE)[0]
    return [f"row {r}: cosine {cosine[r]:.4f}" for r in bad]


def record_mismatches(
    activations: dict[int, np.ndarray], token_ids: list[int], num_positions: int, ref: Reference
) -> list[str]:
    """Every captured layer of one record against the reference; empty when all rows match."""
    hidden = ref.hidden_states(token_ids[:num_positions])
    problems = []
    for layer, rows in sorted(activations.items()):
        for problem in row_mismatches(rows, hidden[layer], ref.dtype):
            problems.append(f"layer {layer} {problem}")
    return problems
