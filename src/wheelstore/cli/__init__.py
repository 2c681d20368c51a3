"""The command line: argument parsing and printing over the API, and ``doctor``.

The top layer: nothing imports it but ``python -m wheelstore``."""
