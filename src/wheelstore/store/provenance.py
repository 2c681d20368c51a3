"""Provenance: who may have written a manifest, for the tree it describes.

A manifest is the publisher's word that a tree is a wheel's files, so its file must be the publisher's own (the
``publisher_uid`` it names), and the tree it describes must be the publisher's too, or, for an adopted interrupted
publish (:func:`wheelstore.store.publish.adopters`), the store owner's or root's: those are the only orphans anyone
adopts. Anything else is one member's word about another member's files, such as bob writing the manifest for alice's
interrupted publish under her name, which would make him her publisher without her.
"""

from __future__ import annotations

from .manifest import Manifest
from .policy import user_name


def provenance_problem(manifest: Manifest, file_uid: int, tree_uid: int, store_owner: int) -> str | None:
    """Why this manifest, in a file owned by ``file_uid``, may not describe a tree owned by ``tree_uid``; None if
    it may."""
    publisher = manifest.publisher_uid
    if file_uid != publisher:
        return f"written by {user_name(file_uid)}, not by its publisher {user_name(publisher)}"
    if tree_uid not in (publisher, store_owner, 0):
        owner = user_name(tree_uid)
        return f"{user_name(publisher)} published {owner}'s tree, which only {owner} may (others adopt only the " \
               "store owner's and root's)"
    return None
