"""The fetch layer: where distributions come from (sources, HTTP, the index client), downloads, sdist builds and
running uv.

It imports only the store and base layers."""
