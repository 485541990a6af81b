"""amqtt plugins that decide every CONNECT, SUBSCRIBE, PUBLISH and delivery through the store's Registry.

amqtt loads plugins by dotted path and gives them only a config dataclass, so the server binds the Registry
to each loaded plugin right after the broker is built (:func:`bind_plugins`). The plugins own no rules.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
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


class _Bound:
    reg: Any = None
    log: Callable[[str], None] = staticmethod(lambda line: None)

    def bind(self, reg: Any, log: Callable[[str], None]) -> None:
        self.reg = reg
        self.log = log


class RegistryAuthPlugin(BaseAuthPlugin, _Bound):
    """Users and admins authenticate through Registry.authenticate; an unknown name becomes a registration
    attempt (Registry.record_attempt) and is refused like every other failure (CONNACK 5)."""

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
        if await asyncio.to_thread(reg.authenticate, username, password):
            self.log(f"mqtt accept user={safe(username)} {where}")
            return True
        if await asyncio.to_thread(reg.is_user, username):
            self.log(f"mqtt refuse user={safe(username)} {where}: wrong password or disabled")
            return False
        res = await asyncio.to_thread(
            reg.record_attempt, username, password, client_id, session.remote_address, "mqtt")
        code = f" pairing={res.pairing_code}" if getattr(res, "pairing_code", None) and res.accepted else ""
        self.log(f"mqtt refuse user={safe(username)} {where}: registration {res.outcome}{code} ({res.reason})")
        return False


class RegistryTopicPlugin(BaseTopicPlugin, _Bound):
    """subscribe / publish / receive go through Registry.authorize."""

    async def topic_filtering(self, *, session: Session | None = None, topic: str | None = None,
                              action: Action | None = None) -> bool | None:
        reg = self.reg
        if reg is None or session is None or not session.username or topic is None or action is None:
            return False
        allowed = bool(reg.authorize(session.username, str(action), topic, client_id=session.client_id))
        if action == Action.SUBSCRIBE:
            verdict = "allow" if allowed else "deny (SUBACK 0x80)"
            self.log(f"mqtt subscribe {verdict} user={safe(session.username)} filter={safe(topic)}")
        elif action == Action.PUBLISH and not allowed:
            self.log(f"mqtt publish deny user={safe(session.username)} topic={safe(topic)}: dropped")
        return allowed


def bind_plugins(broker: Any, reg: Any, log: Callable[[str], None]) -> None:
    found = 0
    for plugin in broker.plugins_manager.plugins:
        if isinstance(plugin, _Bound):
            plugin.bind(reg, log)
            found += 1
    if found != 2:
        raise RuntimeError("registry plugins were not loaded by amqtt")
