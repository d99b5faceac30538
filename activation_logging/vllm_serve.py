"""The original activation-logging server's wrapper script, on this stack:

    python -m activation_logging.vllm_serve --model M [--auth_token T] [--host H] [--port P] ...

starts storage, inference (vLLM with capture) and the gateway; `--help` lists every flag.
The code is `actlog.cli.original_server`."""

from actlog.cli.original_server import main

if __name__ == "__main__":
    main()
