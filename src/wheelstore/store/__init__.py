"""The store layer: the shared store itself, and everything that reads or writes it.

The store and its policy, manifests, locks, reading and publishing wheels, bytecode, checks and repair, gc roots, gc
and stats. It imports only :mod:`wheelstore.base`."""
