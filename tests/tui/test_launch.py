"""`client-registry` with no broker running: the dashboard embeds one and says so."""

from __future__ import annotations

import paho.mqtt.client as mqtt

from tui.launch import LaunchError, broker_answers, prepare_dashboard
from tui.widgets.status_header import render_broker

from .conftest import free_port, wait_for


async def test_no_broker_answers_so_the_dashboard_embeds_one(db_path):
    port = free_port()
    assert not broker_answers("127.0.0.1", port)
    app, reg, embedded = prepare_dashboard(db_path, f"mqtt://127.0.0.1:{port}", http_bind=None)
    try:
        assert embedded is not None and app.embedded
        async with app.run_test(size=(80, 24)) as pilot:
            dash = app.screen_stack[0]
            await wait_for(pilot, lambda: dash.header_state.broker == "connected", message="connected")
            assert "embedded broker: stops when you quit" in render_broker(dash.header_state).plain
            await pilot.press("u")
            device = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="probe-1")
            device.username_pw_set("probe-1", "probe-secret")
            device.connect("127.0.0.1", port)
            device.loop_start()
            await wait_for(pilot, lambda: any(r.username == "probe-1"
                                              for r in dash.requests_table.model.values()), message="request")
            device.loop_stop()
            device.disconnect()
    finally:
        embedded.stop()
        reg.close()
    assert not broker_answers("127.0.0.1", port)  # it stopped with the dashboard


async def test_a_running_broker_is_used_not_embedded(db_path, mosquitto):
    app, reg, embedded = prepare_dashboard(db_path, f"mqtt://127.0.0.1:{mosquitto.port}")
    try:
        assert embedded is None and not app.embedded
        assert app.mqtt_target.username == "client-registry-console"  # console account filled in
    finally:
        reg.close()


def test_bad_url_is_a_usage_error(db_path):
    try:
        prepare_dashboard(db_path, "http://example.com")
    except LaunchError as exc:
        assert exc.code == 2 and "mqtt://" in str(exc)
    else:
        raise AssertionError("expected LaunchError")


def test_the_embedded_broker_listens_where_the_url_says(db_path):
    """--mqtt mqtt://127.0.0.1:PORT: the embedded Mosquitto listens on 127.0.0.1 only, not on every interface."""
    import socket

    port = free_port()
    _app, reg, embedded = prepare_dashboard(db_path, f"mqtt://127.0.0.1:{port}", http_bind="none")
    try:
        conf = reg.companion("mosquitto.conf").read_text()
        assert f"listener {port} 127.0.0.1" in conf.splitlines()
        assert embedded.http_port is None  # --http-bind none
        other = next((a for a in {i[4][0] for i in socket.getaddrinfo(socket.gethostname(), None, socket.AF_INET)}
                      if not a.startswith("127.")), None)
        if other is not None:
            assert not broker_answers(other, port)
    finally:
        embedded.stop()
        reg.close()


def test_a_taken_http_port_is_one_clear_line(db_path):
    import socket

    blocker = socket.socket()
    blocker.bind(("127.0.0.1", 0))
    blocker.listen()
    taken = blocker.getsockname()[1]
    try:
        prepare_dashboard(db_path, f"mqtt://127.0.0.1:{free_port()}", http_bind=f"127.0.0.1:{taken}")
    except LaunchError as exc:
        assert str(exc) == (f"cannot start the embedded server: cannot listen for HTTP on 127.0.0.1:{taken}: "
                            f"address already in use (choose another with --http-bind HOST:PORT, or --http-bind none)")
        assert exc.code == 1
    else:
        raise AssertionError("the dashboard started without its HTTP API and said nothing")
    finally:
        blocker.close()


async def test_the_header_says_first_when_the_service_cannot_do_its_job(reg):
    """A running server that notes a problem (Mosquitto stopped taking its changes) is named first in the
    header, from the status the dashboard reads, at 80 columns too; gone when the note goes."""
    from tui.app import RegistryApp

    from .conftest import loaded

    reg.note_applied(0)
    reg.note_problem("Mosquitto is not taking the registry's changes: no answer within 10 s")
    app = RegistryApp(reg)
    async with app.run_test(size=(80, 24)) as pilot:
        await loaded(pilot)
        dash = app.screen_stack[0]
        await wait_for(pilot, lambda: dash.header_state.service_problem, message="the problem read")
        text = render_broker(dash.header_state, 80).plain
        assert text.startswith(" registry service: Mosquitto is not taking the registry's changes")
        reg.note_problem(None)
        await wait_for(pilot, lambda: not dash.header_state.service_problem, message="cleared", timeout=10)
