"""Issue 16: on a narrow header each item drops its label before its point: the HTTP API's address at 80
columns, the URL after "attached to" at 60; the embedded broker names its Mosquitto's version."""

from __future__ import annotations

import pytest

from tui.widgets.status_header import HeaderState, render_broker


def running(**kwargs) -> HeaderState:
    state = HeaderState(broker="connected", broker_address="127.0.0.1:1883", service_state="running",
                        service_broker="mosquitto 2.0.11, supervised", service_http="127.0.0.1:8080")
    for key, value in kwargs.items():
        setattr(state, key, value)
    return state


def shown(state: HeaderState, width: int) -> str:
    text = render_broker(state, width)
    text.truncate(width, overflow="ellipsis")
    return text.plain


@pytest.mark.parametrize("width", [120, 80, 60])
@pytest.mark.parametrize("mode", ["supervised", "attached", "embedded"])
def test_the_http_address_stays_whole(mode, width):
    state = running(**{"supervised": {}, "attached": {"service_broker": "attached to mqtt://10.20.30.40:1883",
                                                       "broker_address": "10.20.30.40:1883"},
                       "embedded": {"embedded": True}}[mode])
    line = shown(state, width)
    assert len(line) <= width and "127.0.0.1:8080" in line and "…" not in line, line
    if mode == "attached":
        assert "mqtt://10.20.30.40:1883" in line  # the URL stays; "attached to" may go
    if mode == "embedded":
        assert "embedded" in line and "stops" in line


def test_labels_go_before_the_points():
    assert shown(running(), 120) == (" broker 127.0.0.1:1883 ● connected · mosquitto 2.0.11, supervised · "
                                     "HTTP API 127.0.0.1:8080")
    assert shown(running(), 80) == " 127.0.0.1:1883 ● connected · mosquitto 2.0.11, supervised · HTTP 127.0.0.1:8080"
    attached = running(service_broker="attached to mqtt://gw.example:1883", broker_address="gw.example:1883")
    assert "attached to mqtt://gw.example:1883" in shown(attached, 80)
    assert shown(attached, 60) == " ● connected · mqtt://gw.example:1883 · HTTP 127.0.0.1:8080"


def test_the_embedded_broker_names_its_version():
    line = shown(running(embedded=True), 120)
    assert "mosquitto 2.0.11 · embedded broker: stops when you quit" in line


def test_the_tls_listener_is_named_and_goes_first_when_narrow():
    state = running(service_tls="mqtts://0.0.0.0:8883")
    assert "TLS mqtts://0.0.0.0:8883" in shown(state, 160)
    line = shown(state, 100)  # its label goes first, then its address before the HTTP API's
    assert "mqtts://0.0.0.0:8883" in line and "TLS " not in line and "127.0.0.1:8080" in line, line
    assert "127.0.0.1:8080" in shown(state, 60) and "…" not in shown(state, 60)
