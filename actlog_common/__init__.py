"""What the client and the three services share, and nothing either side owns.

The generated protobuf code (`v1`, from `protos/`), the dtype table, layer resolution, the
same-host read protocol's conventions, prompt hashes and record ids, gRPC security, the
defaults every entry point uses, and the default model. It imports no `actlog` client module
and no service (tests/unit/test_package_boundaries.py holds every package to its side).
"""
