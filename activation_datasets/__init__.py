"""Datasets for analysis past one machine: stored records as Parquet shards
(`actlog dataset export`)."""
