"""Trailing-metadata keys the services attach to a failed call, and clients read."""

# The service's domain error name (e.g. "SpoolFull"); never sent with INTERNAL.
ERROR_TYPE_KEY = "actlog-error-type"
# The request field at fault (the gateway's OpenAI `param`).
PARAM_KEY = "actlog-param"
