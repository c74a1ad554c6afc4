"""User and item tokens: `<uid_k>` is dense user id k, `<iid_k>` dense item id k (docs/design.md eq. 1).

With tokens off ("w/o ET" ablation) the same ids are written as plain text instead; both
renderings come from here so prompts, vocabulary expansion and scoring always agree.
"""
from __future__ import annotations

import re

USER_TOKEN_RE = re.compile(r"^<uid_(\d+)>$")
ITEM_TOKEN_RE = re.compile(r"^<iid_(\d+)>$")


def user_token(k: int) -> str:
    return f"<uid_{k}>"


def item_token(k: int) -> str:
    return f"<iid_{k}>"


def new_tokens(n_users: int, n_items: int) -> list[str]:
    """All tokens vocabulary expansion adds, users first, in dense-id order."""
    return [user_token(k) for k in range(n_users)] + [item_token(k) for k in range(n_items)]


def user_text(k: int, tokens: bool) -> str:
    return user_token(k) if tokens else f"user {k}"


def item_text(k: int, tokens: bool) -> str:
    return item_token(k) if tokens else f"item {k}"
