"""The original project's check that activation logging works, against this stack:

    python activation_logging/test_lmdb_logging.py [--model M] [--auth_token T]
        [--server URL] [--storage-addr HOST:PORT]

Sends a completion to the running gateway, finds its record in storage and prints what was
logged (prompt, response, model, layers, shapes); exits 1 with the reason when nothing was.
`actlog verify` is the same check.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout as well

from actlog.verify import VerificationFailed, verify  # noqa: E402
from actlog_common.defaults import GATEWAY_PORT, STORAGE_ADDR  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="model name (default: the one the gateway serves)")
    parser.add_argument("--auth_token", help="accepted for the original's gated models")
    parser.add_argument("--server", default=f"http://127.0.0.1:{GATEWAY_PORT}")
    parser.add_argument(
        "--storage-addr", "--storage", dest="storage_addr",
        default=os.environ.get("STORAGE_ADDR", STORAGE_ADDR),
    )  # fmt: skip
    args = parser.parse_args()
    try:
        verified = verify(args.server, args.storage_addr, args.model, args.auth_token)
    except VerificationFailed as error:
        print(f"FAILED: {error}", file=sys.stderr)
        return 1
    print(verified.summary())
    print("OK: activations were logged")
    return 0


if __name__ == "__main__":
    sys.exit(main())
