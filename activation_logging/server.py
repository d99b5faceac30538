"""The original activation-logging server's ASGI app, on this stack:

    uvicorn activation_logging.server:app --host 0.0.0.0 --port 8000

serves the OpenAI-compatible gateway; at start-up it attaches to storage and inference where
they answer (STORAGE_ADDR, INFERENCE_ADDR) and starts those that do not. The code is
`actlog.original_server`."""

from actlog.original_server import asgi_app

app = asgi_app()
