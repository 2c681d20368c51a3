"""The venv layer: a venv filled from the store (install, sync, uninstall, list, edit).

Creating venvs, laying trees out, link modes, folding and the install-time checks. It imports every layer below it and
nothing above."""
