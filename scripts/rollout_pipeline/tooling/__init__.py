"""Real model servers as child processes, for the real-model test tiers, the demos and the benchmarks: start one on a
loopback port, wait until it serves, stop it by PID; the model folder vLLM serves; the demos' work. The pipeline's
stages never use them.

May import: the core modules. Nothing in the package imports it but cli/ (the demos' front ends).
"""
