"""HalluLens' refusal tests at the paths its users know; the code lives in `actlog.hallulens`."""
