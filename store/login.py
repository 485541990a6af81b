"""The login Mosquitto forwards (a name it does not know, or a user's name with another password while
unlocked): a user's right password is accepted, anything else is a registration attempt. A part of
:class:`store.registry.Registry`, the one entry point."""

from __future__ import annotations

from typing import Any

from .access import Access
from .base import Base, Part
from .certificates import PresentedCertificate
from .database import guarded
from .registration import Registration
from .validation import nfc_problem, normalise_username, text_problem
from .views import AttemptResult, LoginResult


class Logins(Part):
    def __init__(self, base: Base, access: Access, registration: Registration) -> None:
        super().__init__(base)
        self.access, self.registration = access, registration

    @guarded
    def login(self, username: str, password: str, client_id: str | None = None, peer: str | None = None,
              source: str = "mqtt", certificate: PresentedCertificate | None = None) -> LoginResult:
        """A login the broker could not answer itself (Mosquitto forwards names it does not know).

        A user's right password is ``accepted``: the broker has no account for it yet (the service restarted
        since the grant, or the account was deleted by hand) and may create one with this password. Any
        other name is recorded as a registration attempt (and refused). ``certificate``: the client
        certificate the device presented on a TLS listener. ``source`` "mqtt-rekey" is the plugin's report of
        a user's name with another password (a re-key request), "mqtt-certificate" of a user's name with its
        right password and another certificate (a rotation request)."""
        problem = text_problem(username, "username") or text_problem(password, "password")
        if problem:
            return LoginResult(False, "not_credentials", problem)
        problem = nfc_problem(username)
        if problem:  # never the login of the NFC name's user, never recorded: refused with the rule
            return LoginResult(False, "invalid", problem, AttemptResult("invalid", problem, field="username"))
        username = normalise_username(username)
        verdict = self.access.verdict(username, password)
        if verdict is not None:
            if verdict == "disabled":  # said only to whoever knows the password
                return LoginResult(False, "disabled", "the user is disabled")
            if verdict == "ok" and source != "mqtt-certificate":
                return LoginResult(True, "accepted", "password verified")
            # The broker says: right password, another certificate or none. A user the registry signed a
            # certificate for has no password here ("wrong"), the empty one in the broker.
            if source == "mqtt-certificate":
                if certificate is None:
                    return LoginResult(False, "refused", "the user is bound to a client certificate; none presented: "
                                                         "plain MQTT, or a TLS listener not requiring certificates")
                if verdict != "ok":
                    return LoginResult(False, "refused", "the user identifies by the certificate the registry "
                                                         "signed; another presented")
                attempt = self.registration.record_rotation(username, password, certificate, client_id, peer, "mqtt")
                return LoginResult(False, attempt.outcome, attempt.reason, attempt)
            if source == "mqtt-rekey":  # the broker says: a device of this name, unlocked, another password
                attempt = self.registration.record_rekey(username, password, client_id, peer, "mqtt")
                return LoginResult(False, attempt.outcome, attempt.reason, attempt)
            return LoginResult(False, "refused", "wrong password")
        attempt = self.registration.record_attempt(username, password, client_id, peer,  # a user removed meanwhile
                                                   "mqtt" if source.startswith("mqtt-") else source,
                                                   certificate=certificate)
        return LoginResult(False, attempt.outcome, attempt.reason, attempt)

    @guarded
    def login_many(self, attempts: list[tuple[Any, ...]]) -> list[LoginResult]:
        """:meth:`login` for several attempts ``(username, password, client_id, peer, source[, certificate])`` in
        one write transaction: a flood or a storm of new devices pays one commit per batch, not per attempt."""
        with self.base.write():
            return [self.login(*attempt) for attempt in attempts]
