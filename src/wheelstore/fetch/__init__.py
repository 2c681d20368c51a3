"""The fetch layer: where distributions come from, and getting them into the store.

Sources, HTTP, the index client, downloads, sdist builds and running uv. It imports only the store and base layers."""
