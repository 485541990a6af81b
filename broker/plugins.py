"""amqtt plugins that decide every CONNECT, SUBSCRIBE, PUBLISH and delivery through the store's Registry.

amqtt loads plugins by dotted path and gives them only a config dataclass, so the server binds the Registry
to each loaded plugin right after the broker is built (:func:`bind_plugins`). The plugins own no rules.

Where the work runs: answers the Registry's caches can give (known credentials, known permissions) are given on
the event loop; a login that needs argon2 runs in the server's argon2 executor (as many threads as cores);
a permission look-up that needs the database runs in a worker thread.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import Executor
from typing import Any

from amqtt.contexts import Action
from amqtt.plugins.base import BaseAuthPlugin, BaseTopicPlugin
from amqtt.session import Session

AUTH_PLUGIN = "broker.plugins.RegistryAuthPlugin"
TOPIC_PLUGIN = "broker.plugins.RegistryTopicPlugin"
PLUGINS_CONFIG: dict[str, dict[str, Any]] = {AUTH_PLUGIN: {}, TOPIC_PLUGIN: {}}


def safe(value: Any, limit: int = 80) -> str:
    """Quote a device-supplied string for a log line: escaped, bounded, never raw control characters."""
    if value is None:
        return "-"
    text = str(value)
    if len(text) > limit:
        text = text[:limit] + "..."
    return repr(text)


# Attempt outcomes that (may) have written an Event row: the relay is woken to publish it at once.
EVENT_OUTCOMES = frozenset({"pending", "conflict", "retry"})


def _noop() -> None:
    return None


class _Bound:
    reg: Any = None
    log: Callable[[str], None] = staticmethod(lambda line: None)
    argon2_pool: Executor | None = None  # None: asyncio's default executor
    wake: Callable[[], None] = staticmethod(_noop)

    def bind(self, reg: Any, log: Callable[[str], None], *, argon2_pool: Executor | None = None,
             wake: Callable[[], None] | None = None) -> None:
        self.reg = reg
        self.log = log
        self.argon2_pool = argon2_pool
        self.wake = wake or _noop


def _login_unless_gone(reg: Any, gone: Callable[[], bool] | None, username: str, password: str,
                       client_id: str, peer: Any) -> Any:
    """Runs in the argon2 executor. A client that closed its socket while this job waited in the queue gets
    no check at all (None): its CONNACK could not be delivered, and the argon2 would be wasted."""
    if gone is not None and gone():
        return None
    return reg.login(username, password, client_id, peer)


class RegistryAuthPlugin(BaseAuthPlugin, _Bound):
    """Every CONNECT goes through Registry.login: users and admins are authenticated, an unknown name becomes a
    registration attempt and is refused like every other failure (CONNACK 5). Credentials the Registry has
    cached are accepted on the event loop (Registry.authenticate_cached); the rest costs one argon2 operation in
    the argon2 executor, skipped when the client has already gone away."""

    async def authenticate(self, *, session: Session) -> bool | None:
        reg = self.reg
        if reg is None:
            return False
        username, password = session.username, session.password
        client_id = session.client_id or ""
        where = f"from {session.remote_address} client_id={safe(client_id)}"
        if not username or password is None:
            self.log(f"mqtt refuse user={safe(username)} {where}: no username/password")
            return False
        if reg.authenticate_cached(username, password):
            self.log(f"mqtt accept user={safe(username)} {where}")
            return True
        res = await asyncio.get_running_loop().run_in_executor(
            self.argon2_pool, _login_unless_gone, reg, getattr(session, "gone", None), username, password,
            client_id, session.remote_address)
        if res is None:
            self.log(f"mqtt drop user={safe(username)} {where}: the client left before its check")
            return False
        if res.accepted:
            self.log(f"mqtt accept user={safe(username)} {where}")
            return True
        attempt = res.attempt
        if attempt is None:
            self.log(f"mqtt refuse user={safe(username)} {where}: {res.reason}")
            return False
        if attempt.outcome in EVENT_OUTCOMES:
            self.wake()
        code = f" pairing={attempt.pairing_code}" if attempt.pairing_code and attempt.accepted else ""
        self.log(f"mqtt refuse user={safe(username)} {where}: registration {attempt.outcome}{code} "
                 f"({attempt.reason})")
        return False


class RegistryTopicPlugin(BaseTopicPlugin, _Bound):
    """subscribe / publish / receive go through Registry.authorize: answered on the event loop when the user's
    permissions are cached (Registry.authorize_cached), else looked up in a worker thread."""

    async def topic_filtering(self, *, session: Session | None = None, topic: str | None = None,
                              action: Action | None = None) -> bool | None:
        reg = self.reg
        if reg is None or session is None or not session.username or topic is None or action is None:
            return False
        allowed = reg.authorize_cached(session.username, str(action), topic, client_id=session.client_id)
        if allowed is None:
            allowed = await asyncio.to_thread(
                reg.authorize, session.username, str(action), topic, client_id=session.client_id)
        allowed = bool(allowed)
        if action == Action.SUBSCRIBE:
            verdict = "allow" if allowed else "deny (SUBACK 0x80)"
            self.log(f"mqtt subscribe {verdict} user={safe(session.username)} filter={safe(topic)}")
        elif action == Action.PUBLISH and not allowed:
            self.log(f"mqtt publish deny user={safe(session.username)} topic={safe(topic)}: dropped")
        return allowed


def bind_plugins(broker: Any, reg: Any, log: Callable[[str], None], *, argon2_pool: Executor | None = None,
                 wake: Callable[[], None] | None = None) -> None:
    found = 0
    for plugin in broker.plugins_manager.plugins:
        if isinstance(plugin, _Bound):
            plugin.bind(reg, log, argon2_pool=argon2_pool, wake=wake)
            found += 1
    if found != 2:
        raise RuntimeError("registry plugins were not loaded by amqtt")
