"""Read your writes, for the CLI and the dashboard alike: after a change, wake the server running on this
registry (it applies the change to the broker now, not at its next poll) and wait until it has."""

from __future__ import annotations

from store import Registry

APPLY_TIMEOUT = 1.0  # seconds a change waits for the running server to apply it to the broker


def until_applied(reg: Registry, event_id: int | None = None) -> str:
    """"applied", "no_server" or "timeout" (store.Registry.wait_applied) for ``event_id`` (default: the
    newest event, i.e. the change just made)."""
    from broker.plugin_socket import SOCKET_NAME, wake

    wake(reg.companion(SOCKET_NAME))
    return reg.wait_applied(reg.last_event_id() if event_id is None else event_id, APPLY_TIMEOUT)
