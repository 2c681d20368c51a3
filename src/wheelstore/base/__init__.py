"""The base layer: errors, logs, test hooks, file primitives, names, the user's cache, the interpreter model and
reading dist-infos.

It imports nothing else of wheelstore; every other layer builds on it."""
