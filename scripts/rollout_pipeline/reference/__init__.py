"""The embedded default server and all that only it uses: the OpenAI-shaped server side, the reference policy,
its checkpoints, token counting, fault injection, and starting it as a child process.

May import: the core modules and verify/. Nothing outside imports it but cli/ and rl/.
"""
