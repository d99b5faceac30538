"""The original activation-logging server's paths, kept so that its users' commands run from a
checkout unchanged; the code they reach lives in `actlog` (not installed: no generic
top-level names in site-packages)."""
