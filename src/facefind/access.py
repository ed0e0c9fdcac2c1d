"""Who may do what: the actor behind every library operation, the permission table, a stated purpose.

Access control lives here, under the one library door (api.py), so the CLI, the HTTP API and the
web UI obey the same rules. The local CLI acts as the operating-system user, with the role the
library's ``access.json`` gives that user; a library without one treats its local user as
``admin`` (whoever created the folder owns it). A request through an API key is further limited
to the key's scopes, which can never add to what the owner's role allows.
"""

from __future__ import annotations

import getpass
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from facefind.errors import FaceFindError

ROLES = ("admin", "investigator", "viewer", "auditor")
SCOPES = ("search", "index", "admin", "audit")

# operation -> (roles allowed, key scope needed). One table, so a reviewer reads every rule at once.
PERMISSIONS: dict[str, tuple[frozenset[str], str]] = {
    "search": (frozenset({"admin", "investigator"}), "search"),
    "verify": (frozenset({"admin", "investigator"}), "search"),
    "faces": (frozenset({"admin", "investigator"}), "search"),
    "evidence": (frozenset({"admin", "investigator"}), "search"),
    "read_results": (frozenset({"admin", "investigator", "viewer"}), "search"),
    "share": (frozenset({"admin", "investigator"}), "search"),
    "index": (frozenset({"admin", "investigator"}), "index"),
    "stats": (frozenset({"admin", "investigator", "viewer"}), "search"),
    "remove": (frozenset({"admin"}), "admin"),
    "erase": (frozenset({"admin"}), "admin"),
    "check": (frozenset({"admin"}), "admin"),
    "settings": (frozenset({"admin"}), "admin"),
    "calibrate": (frozenset({"admin"}), "admin"),
    "audit_read": (frozenset({"auditor", "admin"}), "audit"),
    "watch_manage": (frozenset({"admin", "investigator"}), "search"),  # create watchlists
    "watch_read": (frozenset({"admin", "investigator", "viewer"}), "search"),  # of watchlists naming them
    "watch_review": (frozenset({"admin", "investigator"}), "search"),  # acknowledge / dismiss hits
    "people_read": (frozenset({"admin", "investigator", "viewer"}), "search"),  # people, co-appearance
    "people_edit": (frozenset({"admin", "investigator"}), "search"),  # build, name, merge, split, move, hide
}

ACCESS_FILE = "access.json"
DEFAULT_MIN_REASON = 10


class ForbiddenError(FaceFindError):
    """The actor's role (or key scope) does not allow this operation."""

    reason = "forbidden"


class PurposeRequiredError(FaceFindError):
    """A search or verify was asked for without a case reference and a reason."""

    reason = "purpose_required"


@dataclass(frozen=True)
class Actor:
    """The person (or their API key) an operation is done for; what the audit log names."""

    name: str
    role: str
    key_scopes: frozenset[str] | None = None  # None: not acting through a key
    collections: frozenset[str] | None = None  # None: every collection (admins, the local command line)
    client_address: str | None = None  # None: this machine's command line

    def __post_init__(self) -> None:
        if self.role not in ROLES:
            raise FaceFindError(f"unknown role {self.role!r}; roles are {', '.join(ROLES)}", reason="bad_argument")
        if self.key_scopes is not None and not self.key_scopes <= set(SCOPES):
            raise FaceFindError(f"unknown key scope in {sorted(self.key_scopes)}", reason="bad_argument")

    def may(self, operation: str) -> bool:
        roles, scope = PERMISSIONS[operation]
        return self.role in roles and (self.key_scopes is None or scope in self.key_scopes)

    def require(self, operation: str) -> None:
        """Raise ``forbidden`` unless this actor may do ``operation``."""
        if not self.may(operation):
            how = f"role {self.role}" + ("" if self.key_scopes is None else f", key scopes {sorted(self.key_scopes)}")
            raise ForbiddenError(f"{self.name} ({how}) may not {operation.replace('_', ' ')}")


@dataclass(frozen=True)
class Purpose:
    """Why a search is run: a case reference and a reason in words, stated for every search."""

    case: str
    reason: str

    def checked(self, min_reason: int = DEFAULT_MIN_REASON) -> "Purpose":
        case, reason = self.case.strip(), self.reason.strip()
        if not case or len(reason) < min_reason:
            raise PurposeRequiredError(
                f"state a purpose: a case reference and a reason of at least {min_reason} characters")
        return Purpose(case, reason)

    def as_dict(self) -> dict[str, str]:
        return {"case": self.case, "reason": self.reason}


def require_purpose(purpose: Purpose | None, min_reason: int) -> Purpose:
    """The stated purpose, checked; there is deliberately no default purpose anywhere."""
    if purpose is None:
        raise PurposeRequiredError(
            "every search and verify states its purpose: a case reference and a reason")
    return purpose.checked(min_reason)


def os_user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no passwd entry (some containers)
        return "local"


_COLLECTION_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


def check_collection_name(name: str) -> str:
    if not _COLLECTION_NAME.fullmatch(name):
        raise FaceFindError(f"bad collection name {name!r}: letters, digits and . _ -, up to 64",
                            reason="bad_argument")
    return name


def under_any(path: str, roots: Sequence[str]) -> bool:
    """Whether ``path`` is one of ``roots`` or lies under one (whole folder names, as the catalog matches)."""
    return any(path == root or path.startswith(root.rstrip("/") + "/") for root in roots)


@dataclass
class AccessConfig:
    """The library's access settings (``access.json``): local users' roles, the shortest reason accepted,
    and the collections (name -> root folders) that users are granted.

    With no collections defined the library is one implicit collection that every actor reads.
    """

    local_roles: dict[str, str] = field(default_factory=dict)
    min_reason_length: int = DEFAULT_MIN_REASON
    collections: dict[str, list[str]] = field(default_factory=dict)

    def readable_roots(self, actor: Actor) -> list[str] | None:
        """The root folders ``actor`` may read, or None for everything (no collections defined, or an actor
        not limited to collections: an admin, the local command line)."""
        if not self.collections or actor.collections is None:
            return None
        return sorted({root for name in actor.collections for root in self.collections.get(name, [])})

    @classmethod
    def load(cls, library: Path) -> "AccessConfig":
        path = library / ACCESS_FILE
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return cls()
        except (OSError, ValueError) as error:
            raise FaceFindError(f"{path} is unreadable: {error}", reason="damaged_library") from None
        if not isinstance(data, dict):
            raise FaceFindError(f"{path} must hold a JSON object", reason="damaged_library")
        config = cls(dict(data.get("local_roles", {})), int(data.get("min_reason_length", DEFAULT_MIN_REASON)),
                     {str(name): [str(root) for root in roots] for name, roots in data.get("collections", {}).items()})
        for name, role in config.local_roles.items():
            if role not in ROLES:
                raise FaceFindError(f"{path}: {name} has unknown role {role!r}", reason="damaged_library")
        return config

    def save(self, library: Path) -> None:
        path = library / ACCESS_FILE
        temporary = path.with_suffix(".tmp")
        temporary.write_text(json.dumps(
            {"local_roles": self.local_roles, "min_reason_length": self.min_reason_length,
             "collections": self.collections}, indent=2) + "\n")
        temporary.replace(path)

    def local_actor(self, user: str | None = None) -> Actor:
        """The OS user at this machine's command line: their configured role; with none configured, ``admin``.

        Once roles are configured, a local user who is not listed may only view.
        """
        name = user or os_user()
        if not self.local_roles:
            return Actor(name, "admin")
        return Actor(name, self.local_roles.get(name, "viewer"))
