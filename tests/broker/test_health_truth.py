"""/healthz, `status` and the dashboard's header tell the truth when Mosquitto runs but stops taking the
registry's changes: a grant would be recorded and not enforced. Mosquitto is frozen (SIGSTOP) under a real
`serve`, then thawed."""

from __future__ import annotations

import os
import signal
import subprocess

from store import open_registry

from .clients import healthz
from .conftest import wait_until as until
from .test_serve import CLI, start, wait_serving


def test_a_broker_that_stops_taking_changes_fails_healthz_and_says_so(tmp_path):
    db = str(tmp_path / "registry.db")
    proc = start(db)
    mosquitto = None
    try:
        mqtt_port, http_port, _ = wait_serving(proc)
        assert healthz(http_port)[0] == 200
        reg = open_registry(db)
        reg.unlock(300, actor="t")
        reg.record_attempt("frozen-1", "secret-pw", "c1", "10.0.0.1", "http")
        mosquitto = int((tmp_path / "registry.mosquitto.pid").read_text())
        os.kill(mosquitto, signal.SIGSTOP)
        granted = subprocess.run([CLI, "grant", "frozen-1", "--db", db], capture_output=True, text=True, timeout=60)
        assert granted.returncode == 1 and "did not apply it" in granted.stderr  # recorded, not enforced
        _code, body = until(lambda: (lambda r: r if r[0] == 503 else None)(healthz(http_port)), 30, "healthz 503")
        assert body["message"].startswith("Mosquitto is not taking the registry's changes")
        until(lambda: reg.status().server_problem, 5, "the problem noted in the database (within a second)")
        status = subprocess.run([CLI, "status", "--db", db], capture_output=True, text=True, timeout=30)
        assert "\nserver: Mosquitto is not taking the registry's changes" in status.stdout
        assert reg.status().server_problem == body["message"]  # what the dashboard's header shows
        os.kill(mosquitto, signal.SIGCONT)
        mosquitto = None
        until(lambda: healthz(http_port)[0] == 200, 30, "healthz back to 200")
        until(lambda: reg.status().server_problem is None, 10, "the problem cleared in the database")
        pub = subprocess.run(["mosquitto_pub", "-p", str(mqtt_port), "-u", "frozen-1", "-P", "secret-pw", "-t", "t",
                              "-m", "x"], capture_output=True, text=True, timeout=20)
        assert pub.returncode == 0, pub.stderr  # the grant recorded while frozen is enforced now
        reg.close()
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
        assert "broker: Mosquitto is not taking the registry's changes" in err
        assert "broker: taking the registry's changes again" in err
    finally:
        if mosquitto:
            os.kill(mosquitto, signal.SIGCONT)
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
