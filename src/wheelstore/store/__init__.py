"""The store layer: the store and its policy, manifests, locks, reading and publishing wheels, bytecode, checks and repair, gc roots, gc and stats.

It imports only :mod:`wheelstore.base`."""
