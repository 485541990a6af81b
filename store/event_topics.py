"""The registry's own MQTT topics: the service publishes its events and its status there, dashboards read
them (``$``-topics stay out of ``#`` subscriptions; only admin accounts may read them)."""

EVENTS_PREFIX = "$registry/v1/events/"  # + the event's kind
EVENTS_FILTER = EVENTS_PREFIX + "#"
STATUS_TOPIC = "$registry/v1/status"  # retained by the service: which broker, running or stopped
