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
