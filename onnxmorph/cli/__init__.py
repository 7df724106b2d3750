"""Command-line interface: a thin click group over the Python API, one module per command."""
