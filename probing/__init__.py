"""Linear probes over stored activations: features pooled in storage, a label as target,
held-out AUROC by layer (`actlog probe`)."""
