"""The resolve layer: from what the user typed (requirements, requirements files, find-links, pylock files) to one located file or store tree per distribution.

It imports only the fetch, store and base layers."""
