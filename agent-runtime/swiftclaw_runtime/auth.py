"""Bearer API keys mapped to tenant and user.

Keys are held only as SHA-256 digests and a presented key is looked up by its digest.
Comparing digests instead of keys is what makes the check constant-time with respect to
the secret: how far a guess matches a real key never shows in the timing, because a
one-character change to the guess changes the whole digest.

The keys file (YAML or JSON) lists ``keys: [{key: ..., tenant: ..., user: ...}]``; an
entry may give ``sha256: <hex>`` instead of ``key`` so that no plaintext is stored.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from .errors import unauthorized


@dataclass(frozen=True)
class Principal:
    tenant: str
    user: str


ANONYMOUS = Principal("default", "anonymous")


class KeyEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")
    key: Annotated[str, Field(min_length=8, max_length=512)] | None = None
    sha256: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")] | None = None
    tenant: Annotated[str, Field(min_length=1, max_length=128)] = "default"
    user: Annotated[str, Field(min_length=1, max_length=256)]

    @model_validator(mode="after")
    def _one_of(self) -> KeyEntry:
        if (self.key is None) == (self.sha256 is None):
            raise ValueError("give exactly one of 'key' or 'sha256'")
        return self


class KeysFile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    keys: list[KeyEntry]


FIELDS = frozenset(KeysFile.model_fields) | frozenset(KeyEntry.model_fields)


def _place(part: str | int) -> str:
    """One step of a validation error's path as it may be logged: an index, or a field
    of the keys file; any other name (it may be a key) as ``(unknown field)``."""
    if isinstance(part, int) or part in FIELDS:
        return str(part)
    return "(unknown field)"


def digest(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


class ApiKeyStore:
    """Digest -> principal. Empty store with ``required`` set refuses every request."""

    def __init__(self, entries: list[KeyEntry], required: bool = True) -> None:
        self.required = required
        self._by_digest: dict[bytes, Principal] = {}
        for e in entries:
            d = digest(e.key) if e.key is not None else bytes.fromhex(e.sha256 or "")
            self._by_digest[d] = Principal(e.tenant, e.user)

    def __len__(self) -> int:
        return len(self._by_digest)

    @classmethod
    def from_file(cls, path: Path, required: bool = True) -> ApiKeyStore:
        """Load a keys file; a missing file gives an empty store (every request refused)."""
        try:
            text = path.read_text()
        except FileNotFoundError:
            return cls([], required)
        except OSError as err:
            raise ValueError(f"API keys file {path} cannot be read: {err.strerror}") from None
        try:
            data = yaml.safe_load(text)
            return cls(KeysFile.model_validate(data).keys, required)
        except yaml.YAMLError as err:
            # the position only: the parser's own message quotes the line (a key)
            mark = getattr(err, "problem_mark", None)
            where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
            raise ValueError(f"API keys file {path} is invalid: not YAML{where}") from None
        except ValidationError as err:
            # the fields and the kinds of error, never the values (they may be keys), nor
            # a name that is no field (a key written where a field name goes)
            where = "; ".join(
                f"{'.'.join(_place(p) for p in e['loc']) or '(file)'}: {e['type']}"
                for e in err.errors()[:5]
            )
            raise ValueError(f"API keys file {path} is invalid: {where}") from None

    def authenticate(self, authorization: str | None, api_key: str | None = None) -> Principal:
        """The principal for an ``Authorization: Bearer <key>`` header, or for an
        ``x-api-key`` header (``api_key``: Anthropic's clients send theirs there; it is
        read first when present), or a 401."""
        if not self.required:
            return ANONYMOUS
        if api_key is not None:
            token = api_key.strip()
            if not token:
                raise unauthorized("The 'x-api-key' header is empty.")
            return self._principal(token)
        if not authorization:
            raise unauthorized(
                "Missing API key: send it in the 'Authorization: Bearer <key>' header."
            )
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise unauthorized("The 'Authorization' header must be 'Bearer <key>'.")
        return self._principal(token.strip())

    def _principal(self, token: str) -> Principal:
        principal = self._by_digest.get(digest(token))
        if principal is None:
            raise unauthorized("Incorrect API key provided.")
        return principal
