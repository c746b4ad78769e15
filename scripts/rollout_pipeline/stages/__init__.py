"""The DVC stages over rollout files: filter (SFT), pair (DPO), metrics with pass@k, grouped stage input, prompt sets, the HTML report.

May import: the core modules and verify/. Never collect/, reference/, rl/ or cli/.
"""
