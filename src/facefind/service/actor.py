"""Who is making a request. Every route depends on :func:`current_actor`.

Accounts, roles and API keys come next (issue 10); until then the actor is the local operator,
which is why the server binds to loopback and warns otherwise. When accounts arrive, this one
dependency authenticates the request (cookie or key) and every route already receives its actor.
"""

from __future__ import annotations

import getpass
from dataclasses import dataclass

from fastapi import Request


@dataclass(frozen=True)
class Actor:
    """The person or key a request acts for; ``kind`` says how it was established."""

    name: str
    kind: str  # "local" today; "user" or "api_key" once accounts exist


def _local_user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no passwd entry (some containers)
        return "local"


LOCAL_OPERATOR = Actor(name=_local_user(), kind="local")


def current_actor(request: Request) -> Actor:
    """The actor of this request, also kept on ``request.state`` for logging and pages."""
    request.state.actor = LOCAL_OPERATOR
    return LOCAL_OPERATOR
