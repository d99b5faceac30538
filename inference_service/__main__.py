import sys

from inference_service.companions import check_companions
from inference_service.errors import StartupError

if __name__ == "__main__":
    # Before vLLM is imported (by the server module), which fails deep inside otherwise.
    try:
        check_companions()
    except StartupError as exc:
        sys.exit(f"inference: {exc}")
    from inference_service.server import main

    main()
