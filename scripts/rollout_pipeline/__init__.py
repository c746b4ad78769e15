"""Rollout-data pipeline for LLM post-training: collector, verifiers, stages and the embedded reference server."""
