"""Addresses as operators write them: a listener's ``HOST:PORT`` and a broker's ``mqtt://`` URL. The one
place both are parsed (serve, the dashboard, simulate, mosquitto-config); a bad one is an
:class:`AddressError` whose text is one line for the operator."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

ANY_HOST = "0.0.0.0"
MQTT_PORT = 1883
MQTTS_PORT = 8883
TLS_SCHEMES = ("mqtts", "ssl", "tls")  # (ssl:// and tls:// as paho's and Mosquitto's tools write them)


class AddressError(ValueError):
    """An address that cannot be used; str() is one line."""


def parse_bind(text: str, default_port: int) -> tuple[str, int]:
    """``"HOST:PORT"``, ``"[IPv6]:PORT"``, ``":PORT"``, ``"PORT"`` or ``"HOST"`` -> ``(host, port)``; no host is
    every IPv4 address (``0.0.0.0``), no port ``default_port``."""
    text = text.strip()
    host, port = "", ""
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise AddressError(f"invalid address {text!r}: expected [IPv6]:PORT")
        host, port = text[1:end], text[end + 1:].lstrip(":")
    elif ":" in text:
        host, port = text.rsplit(":", 1)
    elif text.isdigit():
        port = text
    else:
        host = text
    try:
        port_no = int(port) if port else default_port
    except ValueError:
        raise AddressError(f"invalid port in {text!r}") from None
    if not 0 <= port_no <= 65535:
        raise AddressError(f"invalid port in {text!r}")
    return host or ANY_HOST, port_no


@dataclass(frozen=True)
class MqttURL:
    host: str = "127.0.0.1"
    port: int = MQTT_PORT
    username: str | None = None
    password: str | None = None
    tls: bool = False  # mqtts://


def parse_mqtt_url(url: str) -> MqttURL:
    """``mqtt://user:pass@host:port`` (``tcp://`` too; every part optional, ``host:port`` also works);
    ``mqtts://`` is the same over TLS, port 8883 by default."""
    parts = urlsplit(url if "://" in url else f"mqtt://{url}")
    if parts.scheme not in ("mqtt", "tcp", *TLS_SCHEMES):
        raise AddressError(f"unsupported MQTT URL {url!r}: use mqtt://HOST:PORT or mqtts://HOST:PORT")
    try:
        port = parts.port
    except ValueError:
        raise AddressError(f"invalid port in {url!r}") from None
    tls = parts.scheme in TLS_SCHEMES
    return MqttURL(parts.hostname or "127.0.0.1", port or (MQTTS_PORT if tls else MQTT_PORT),
                   unquote(parts.username) if parts.username else None,
                   unquote(parts.password) if parts.password else None, tls)
