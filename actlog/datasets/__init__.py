"""Datasets for analysis past one machine: stored records as Parquet shards
(`actlog dataset export`).

    from actlog.datasets import export_dataset
"""

from actlog._exports import lazy_exports

__getattr__, __all__ = lazy_exports(
    __name__, {"export_dataset": "parquet", "ExportSummary": "parquet"}
)
