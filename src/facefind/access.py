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
from dataclasses import dataclass, field
from pathlib import Path

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
    "index": (frozenset({"admin", "investigator"}), "index"),
    "stats": (frozenset({"admin", "investigator", "viewer"}), "search"),
    "remove": (frozenset({"admin"}), "admin"),
    "erase": (frozenset({"admin"}), "admin"),
    "check": (frozenset({"admin"}), "admin"),
    "settings": (frozenset({"admin"}), "admin"),
    "calibrate": (frozenset({"admin"}), "admin"),
    "audit_read": (frozenset({"auditor", "admin"}), "audit"),
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
    collections: frozenset[str] | None = None  # None: every collection
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


@dataclass
class AccessConfig:
    """The library's access settings (``access.json``): local users' roles, the shortest reason accepted."""

    local_roles: dict[str, str] = field(default_factory=dict)
    min_reason_length: int = DEFAULT_MIN_REASON

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
        config = cls(dict(data.get("local_roles", {})), int(data.get("min_reason_length", DEFAULT_MIN_REASON)))
        for name, role in config.local_roles.items():
            if role not in ROLES:
                raise FaceFindError(f"{path}: {name} has unknown role {role!r}", reason="damaged_library")
        return config

    def save(self, library: Path) -> None:
        path = library / ACCESS_FILE
        temporary = path.with_suffix(".tmp")
        temporary.write_text(json.dumps(
            {"local_roles": self.local_roles, "min_reason_length": self.min_reason_length}, indent=2) + "\n")
        temporary.replace(path)

    def local_actor(self, user: str | None = None) -> Actor:
        """The OS user at this machine's command line: their configured role; with none configured, ``admin``.

        Once roles are configured, a local user who is not listed may only view.
        """
        name = user or os_user()
        if not self.local_roles:
            return Actor(name, "admin")
        return Actor(name, self.local_roles.get(name, "viewer"))
