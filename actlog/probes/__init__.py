"""Linear probes over stored activations: features pooled in storage, a label as target,
held-out AUROC by layer (`actlog probe`).

    from actlog.probes import Target, run_probe
"""

from actlog._exports import lazy_exports

__getattr__, __all__ = lazy_exports(
    __name__,
    {
        "Target": "probe",
        "ProbeReport": "probe",
        "run_probe": "probe",
        "LayerScore": "logistic",
        "ProbeDataError": "logistic",
        "fit_probe": "logistic",
        "score_layer": "logistic",
    },
)
