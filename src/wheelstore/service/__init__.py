"""The store service: one process, the store's owner, that alone writes a store users do not trust each other with.

Users ask it to publish by coordinates and digest (:mod:`.protocol`); it fetches, checks, unpacks, compiles and
publishes by itself (:mod:`.server`). Installs link from the published trees on the client's side (:mod:`.client`).
"""
