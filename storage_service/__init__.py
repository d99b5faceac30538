"""Storage service: persists activation records in LMDB and serves them over gRPC."""
