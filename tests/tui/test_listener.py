"""The listener worker for real: paho against Debian's mosquitto on an ephemeral port.

Mosquitto knows nothing of the registry, so these tests publish the relay's JSON themselves (with
mosquitto_pub), exactly as broker/relay.py formats it; the full registry broker is exercised in
test_embedded.py.
"""

from __future__ import annotations

import json
import subprocess

from store import open_registry
from tui.app import RegistryApp
from tui.listener import MqttTarget

from .conftest import loaded, wait_for


def payload(ev) -> str:
    return json.dumps({"id": ev.id, "time": ev.time, "actor": ev.actor, "kind": ev.kind,
                       "subject": ev.subject, "detail": ev.detail})


def usernames(app):
    return sorted(r.username for r in app.screen_stack[0].requests_table.model.values())


def make_app(reg, mosquitto):
    return RegistryApp(reg, mqtt_target=MqttTarget("127.0.0.1", mosquitto.port), listener_backoff=(0.2, 1.0))


async def test_events_arrive_live_and_a_gap_resyncs_from_the_db(reg, db_path, mosquitto):
    reg.unlock(300)
    app = make_app(reg, mosquitto)
    async with app.run_test(size=(80, 24)) as pilot:
        dash = app.screen_stack[0]
        await wait_for(pilot, lambda: dash.header_state.broker == "connected", message="connected")
        await loaded(pilot)  # the resyncs of start and connect read the database in workers: let them finish
        await wait_for(pilot, lambda: not any(w.is_running for w in app.workers if w.group != "listener"),
                       message="no read still running")
        other = open_registry(db_path)
        other.record_attempt("live-1", "secret-1", "c1", "10.0.0.1:1", "mqtt")
        await pilot.pause(0.3)  # a window in which nothing may arrive: this wait is the test
        assert usernames(app) == []  # connected: nothing is polled, it must come over MQTT
        for ev in other.events(since=dash.last_event_id):
            mosquitto.publish(f"$registry/v1/events/{ev.kind}", payload(ev))
        await wait_for(pilot, lambda: usernames(app) == ["live-1"], message="live-1 via MQTT")
        # two more events, only the second is relayed: the gap in ids makes the app read the DB
        other.record_attempt("live-2", "secret-2", "c2", "10.0.0.1:2", "mqtt")
        other.record_attempt("live-3", "secret-3", "c3", "10.0.0.1:3", "mqtt")
        last = other.events(since=dash.last_event_id)[-1]
        mosquitto.publish(f"$registry/v1/events/{last.kind}", payload(last))
        await wait_for(pilot, lambda: usernames(app) == ["live-1", "live-2", "live-3"], message="gap resync")
        assert dash.last_event_id == other.last_event_id()
        # junk on the topic is ignored, not a crash: the event published after it still arrives
        mosquitto.publish("$registry/v1/events/request.created", "not json [red]")
        other.record_attempt("live-4", "secret-4", "c4", "10.0.0.1:4", "mqtt")
        last = other.events(since=dash.last_event_id)[-1]
        mosquitto.publish(f"$registry/v1/events/{last.kind}", payload(last))
        await wait_for(pilot, lambda: "live-4" in usernames(app), message="live-4 after the junk")
        assert app.is_running and dash.header_state.broker == "connected"
        other.close()


async def test_messages_are_batched(reg, db_path, mosquitto):
    reg.unlock(300)
    batches = []

    class CountingApp(RegistryApp):
        def on_events_batch(self, message):  # Textual also runs RegistryApp's handler (MRO dispatch)
            batches.append(len(message.events))

    app = CountingApp(reg, mqtt_target=MqttTarget("127.0.0.1", mosquitto.port))
    async with app.run_test(size=(80, 24)) as pilot:
        dash = app.screen_stack[0]
        await wait_for(pilot, lambda: dash.header_state.broker == "connected", message="connected")
        await loaded(pilot)  # a start-up read still running would find the requests in the database instead
        await wait_for(pilot, lambda: not any(w.is_running for w in app.workers if w.group != "listener"),
                       message="no read still running")
        for i in range(40):
            reg.record_attempt(f"flood-{i:02d}", "secret-x", f"c{i}", f"10.0.1.{i}:1", "mqtt")
        events = reg.events(since=dash.last_event_id)
        lines = "\n".join(payload(ev) for ev in events)
        subprocess.run(["mosquitto_pub", "-p", str(mosquitto.port), "-q", "1", "-l",
                        "-t", "$registry/v1/events/request.created"], input=lines, text=True, check=True)
        await wait_for(pilot, lambda: len(usernames(app)) == 40, message="40 requests")
        assert sum(batches) == len(events)
        assert len(batches) < len(events)  # delivered in batches, not one message per event


async def test_broker_lost_and_back(reg, db_path, mosquitto):
    reg.unlock(300)
    app = make_app(reg, mosquitto)
    resyncs = []
    async with app.run_test(size=(80, 24)) as pilot:
        dash = app.screen_stack[0]
        original = dash.resync
        dash.resync = lambda: (resyncs.append(1), original())
        await wait_for(pilot, lambda: dash.header_state.broker == "connected", message="connected")
        before = len(resyncs)
        mosquitto.stop()
        await wait_for(pilot, lambda: dash.header_state.broker == "retrying", message="retrying banner")
        from tui.widgets.status_header import render_broker
        assert "disconnected, retrying" in render_broker(dash.header_state).plain
        other = open_registry(db_path)
        other.record_attempt("while-away", "secret-1", "c1", "10.0.0.1:1", "mqtt")
        other.close()
        mosquitto.start()
        await wait_for(pilot, lambda: dash.header_state.broker == "connected", timeout=15, message="reconnected")
        assert len(resyncs) > before  # every (re)connect resyncs from the database
        await wait_for(pilot, lambda: usernames(app) == ["while-away"], message="resynced")


async def test_listener_stops_promptly_on_quit(reg, mosquitto):
    app = make_app(reg, mosquitto)
    async with app.run_test(size=(80, 24)) as pilot:
        dash = app.screen_stack[0]
        await wait_for(pilot, lambda: dash.header_state.broker == "connected", message="connected")
        workers = [w for w in app.workers if w.group == "listener"]
        assert len(workers) == 1
        assert not app.listener_done.is_set()
        await pilot.press("q")
    assert workers[0].is_finished
    assert app.listener_done.wait(5), "the paho thread is still running after quit"


async def test_wrong_login_is_reported_and_retried(reg, tmp_path):
    from .conftest import Mosquitto
    broker = Mosquitto(tmp_path)
    broker.config.write_text(f"listener {broker.port} 127.0.0.1\nallow_anonymous false\n")
    broker.start()
    try:
        app = RegistryApp(reg, mqtt_target=MqttTarget("127.0.0.1", broker.port, "nobody", "wrong-pw"),
                          listener_backoff=(0.2, 1.0))
        async with app.run_test(size=(80, 24)) as pilot:
            dash = app.screen_stack[0]
            await wait_for(pilot, lambda: dash.header_state.broker == "refused", message="refused")
            from tui.widgets.status_header import render_broker
            assert "login refused" in render_broker(dash.header_state).plain
    finally:
        broker.stop()


async def test_a_broker_without_a_registry_service_is_said_so(reg, mosquitto):
    """A plain Mosquitto accepts the console and its subscription, but no service publishes a status there:
    the header must not look like a working registry. A status that appears later clears the warning."""
    app = make_app(reg, mosquitto)
    async with app.run_test(size=(120, 40)) as pilot:
        dash = app.screen_stack[0]
        await wait_for(pilot, lambda: dash.header_state.service_state == "absent", message="status absent")
        broker_line = str(dash.query_one("#header-broker").render())
        assert "● connected" in broker_line and "not a client-registry broker" in broker_line
        status = {"service": "client-registry", "version": "x", "broker": "mosquitto 2.0.11, supervised",
                  "state": "running", "time": 0, "http": "127.0.0.1:18080"}
        subprocess.run(["mosquitto_pub", "-p", str(mosquitto.port), "-r", "-q", "1", "-t", "$registry/v1/status",
                        "-m", json.dumps(status)], check=True)
        await wait_for(pilot, lambda: dash.header_state.service_state == "running", message="status heard")
        broker_line = str(dash.query_one("#header-broker").render())
        assert "not a client-registry broker" not in broker_line
        assert "HTTP API 127.0.0.1:18080" in broker_line


async def test_a_foreign_status_is_not_a_registry(reg, mosquitto):
    subprocess.run(["mosquitto_pub", "-p", str(mosquitto.port), "-r", "-q", "1", "-t", "$registry/v1/status",
                    "-m", '{"state": "running"}'], check=True)
    app = make_app(reg, mosquitto)
    async with app.run_test(size=(120, 40)) as pilot:
        dash = app.screen_stack[0]
        await wait_for(pilot, lambda: dash.header_state.service_state == "absent", message="foreign status refused")
