"""HalluLens' task layout, kept so that its command lines run from a checkout unchanged.

Not installed: the benchmarks themselves are `actlog.hallulens`.
"""
