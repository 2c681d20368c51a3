"""The base layer: what every other layer builds on, and which imports nothing else of wheelstore.

Errors, logs, test hooks, file primitives, TOML parsing, names, the user's cache, the interpreter model and reading
dist-infos."""
