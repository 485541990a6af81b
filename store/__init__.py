"""The registry store: models, rules and the audit log. Knows nothing of MQTT, HTTP or screens."""

from .crypto import pairing_code
from .errors import BusyError, InvalidValueError, RefusedError, StoreError
from .registry import Registry, RegistryConfig, open_registry
from .views import (
    AttemptResult,
    EventView,
    Grants,
    ItemResult,
    LoginResult,
    PresenceSnapshot,
    RequestView,
    RoleView,
    Status,
    UserPresence,
    UserView,
)

__all__ = [
    "AttemptResult", "BusyError", "EventView", "Grants", "InvalidValueError", "ItemResult", "LoginResult",
    "PresenceSnapshot", "RefusedError", "Registry", "RegistryConfig", "RequestView", "RoleView", "Status", "StoreError",
    "UserPresence", "UserView",
    "open_registry", "pairing_code",
]
