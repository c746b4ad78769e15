"""Pure verifiers: score an output against a row (no I/O; whatever calls HTTP lives in collect/).

May import: the core modules only.
"""

# The built-in verifiers' names (here, so that naming them does not load them: the embedded server's flags).
VERIFIER_KINDS = ("math", "exact")
