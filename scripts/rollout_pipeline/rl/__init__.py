"""The online RL loop: its schedule as DVC stages, its configured hooks, and the default trainer.

May import: the core modules, stages/, collect/, verify/ and reference/ (the default trainer updates the
reference policy's checkpoints). Never cli/.
"""
