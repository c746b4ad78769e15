"""Pure verifiers: score an output against a row (no I/O; whatever calls HTTP lives in collect/).

May import: the core modules only.
"""
