"""Rollout-data pipeline for LLM post-training. Core modules here (errors, jsonl, params, schema, rows); the layers
are subpackages: collect/, verify/, stages/, rl/, reference/, cli/ (see ARCHITECTURE.md)."""
