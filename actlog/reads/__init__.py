"""How the client reads a record's rows: a `plan` of the layers and rows one read takes,
streamed over gRPC (`stream`) or, on the storage service's host, through shared memory
(`same_host`, with `shm`'s arenas)."""
