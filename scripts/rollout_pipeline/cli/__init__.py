"""Command-line front ends (thin: parse arguments, call the library). The only place that wires layers together.

May import: everything.
"""
