"""The collector engine: stream prompts, ask a server for rollouts, retry, score, store, resume.

May import: the core modules (errors, jsonl, params, schema, rows) and verify/. Never reference/, rl/, stages/ or cli/.
"""
