"""Pseudonymous user ids: a keyed hash applied before anything is stored or published.

With ``SHIFTWATCH_PSEUDONYM_KEY`` set, the worker replaces every user id (and every event
id, which producers often build from the user id) by an HMAC-SHA-256 of it under that secret,
before the user's row is written or an output is published. The same id always maps to the
same pseudonym, so deduplication, table routing and ``shiftwatch forget`` keep working; without
the secret the mapping cannot be reversed or recomputed.

>>> pseudonyms = Pseudonymiser(b"secret")
>>> pseudonyms.user("alice") == pseudonyms.user("alice"), pseudonyms.user("alice").startswith("u-")
(True, True)
>>> len(pseudonyms.user("alice")), pseudonyms.user("alice") != Pseudonymiser(b"other").user("alice")
(34, True)
>>> Pseudonymiser(b"").user("alice")  # no secret: ids pass through
'alice'
"""

from __future__ import annotations

import hashlib
import hmac


class Pseudonymiser:
    def __init__(self, secret: bytes):
        self.enabled = bool(secret)
        self._secret = secret

    def _hash(self, prefix: str, value: str) -> str:
        if not self.enabled:
            return value
        return prefix + hmac.new(self._secret, value.encode(), hashlib.sha256).hexdigest()[:32]

    def user(self, user_id: str) -> str:
        return self._hash("u-", user_id)

    def event(self, event_id: str) -> str:
        return self._hash("e-", event_id)

    def is_pseudonym(self, user_id: str) -> bool:
        """Whether ``user_id`` has the form of a user pseudonym (``u-`` and 32 hex digits)."""
        return len(user_id) == 34 and user_id.startswith("u-") and all(c in "0123456789abcdef" for c in user_id[2:])

    def row_key(self, message_key: bytes) -> bytes:
        """The users-table key of a message keyed by a (raw) user id."""
        return self.user(message_key.decode(errors="replace")).encode() if self.enabled else message_key
