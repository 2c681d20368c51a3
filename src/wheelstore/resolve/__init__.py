"""The resolve layer: from what the user typed to one located file or store tree per distribution.

Requirements, requirements files, find-links and pylock files, and locking with uv. It imports only the fetch, store and
base layers."""
