"""Command-line entry points; each module exposes ``main(argv) -> int``."""
