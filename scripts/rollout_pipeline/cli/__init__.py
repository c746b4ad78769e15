"""Command-line front ends (thin: parse arguments, call the library)."""
