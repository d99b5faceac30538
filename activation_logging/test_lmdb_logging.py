"""The original project's check that activation logging works, against this stack:

    python activation_logging/test_lmdb_logging.py [--model M] [--auth_token T]
        [--server URL] [--storage-addr HOST:PORT]

Sends a completion to the running gateway, finds its record in storage and prints what was
logged (prompt, response, model, layers, shapes); exits 1 with the reason when nothing was.
`actlog verify` is the same check. From Python, as the original's current version documents:

    from activation_logging.test_lmdb_logging import run_test
    result = run_test(model=None, prompt="...", server_url="http://127.0.0.1:8000")
    result["success"], result["record_id"], result["shapes"]
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout as well

from actlog.verify import DEFAULT_PROMPT, VerificationFailed, verify  # noqa: E402
from actlog_common.defaults import GATEWAY_PORT, STORAGE_ADDR  # noqa: E402


def run_test(
    model: str | None = None,
    prompt: str = DEFAULT_PROMPT,
    lmdb_path: str | None = None,
    auth_token: str | None = None,
    server_url: str = f"http://127.0.0.1:{GATEWAY_PORT}",
    max_tokens: int = 8,
    storage_addr: str | None = None,
    timeout: float = 60.0,
) -> dict[str, Any]:
    """One completion through the gateway and its record looked up in storage.

    The result has `success`; when it succeeded, the record's `record_id`, `prompt_hash`,
    `prompt`, `response`, `model`, `layers`, `dtype` and each layer's `shapes`; when not,
    `error` says where it stopped. `lmdb_path` is accepted for the original's signature: the
    records' LMDB belongs to the storage service, which is asked at `storage_addr`
    (STORAGE_ADDR); when given, it is reported back as `lmdb_path`.
    """
    storage = storage_addr or os.environ.get("STORAGE_ADDR", STORAGE_ADDR)
    result: dict[str, Any] = {"success": False, "server_url": server_url, "storage": storage}
    if lmdb_path:
        result["lmdb_path"] = lmdb_path
    try:
        verified = verify(server_url, storage, model, auth_token, prompt, timeout, max_tokens)
    except VerificationFailed as error:
        return {**result, "error": str(error)}
    r = verified.record
    return {
        **result,
        "success": True,
        "record_id": r.record_id,
        "prompt_hash": r.prompt_hash,
        "prompt": r.prompt,
        "response": r.response,
        "model": r.model,
        "layers": list(r.layers),
        "dtype": r.dtype,
        "shapes": {layer: list(shape) for layer, shape in verified.shapes.items()},
    }


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
