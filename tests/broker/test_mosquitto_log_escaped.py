"""Mosquitto copies device text (client ids) into its own log lines; what reaches serve's stderr is escaped like
the service's own lines, so a client id cannot reorder (U+202E), break (U+2028) or colour (ESC) the log."""

from __future__ import annotations

import subprocess
import threading
import time

from tests.broker.clients import Paho
from tests.broker.test_serve import CLI, start, wait_serving

EVIL_ID = "evil\u202eetalp\u2028forged line"
RAW = ("\u202e", "\u2028", "\x1b")


def test_a_client_id_in_mosquittos_own_lines_reaches_the_log_escaped(tmp_path):
    db = str(tmp_path / "registry.db")
    proc = start(db)
    try:
        mqtt_port, _, lines = wait_serving(proc)
        reader = threading.Thread(target=lambda: lines.extend(proc.stderr), daemon=True)
        reader.start()
        subprocess.run([CLI, "--db", db, "user", "add", "dev-log", "--password-stdin"], input="dev-log-pw\n",
                       text=True, check=True, capture_output=True, timeout=30)
        subprocess.run([CLI, "--db", db, "permit", "dev-log", "t/#", "readWrite"], check=True, capture_output=True,
                       timeout=30)
        # A persistent QoS 1 session that goes away: Mosquitto queues for it, then says it drops, naming it.
        sleeper = Paho(mqtt_port, "dev-log", "dev-log-pw", client_id=EVIL_ID, clean=False).connect()
        assert sleeper.reason_code == 0
        assert sleeper.subscribe("t/q", qos=1) == [1]
        sleeper.close()
        pub = subprocess.run(["mosquitto_pub", "-h", "127.0.0.1", "-p", str(mqtt_port), "-u", "dev-log", "-P",
                              "dev-log-pw", "-q", "1", "-t", "t/q", "-l"], input="m\n" * 1200, text=True,
                             capture_output=True, timeout=60)
        assert pub.returncode == 0, pub.stderr
        deadline = time.monotonic() + 10
        while not any("being dropped" in line for line in lines) and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        proc.terminate()
        proc.wait(timeout=20)
    text = "".join(lines)
    dropped = [line for line in lines if "being dropped" in line]
    assert dropped, text[-2000:]
    assert "evil\\u202eetalp\\u2028forged line" in dropped[0]
    assert not any(ch in text for ch in RAW), [line for line in lines if any(ch in line for ch in RAW)]


def test_every_mosquitto_line_is_escaped_on_its_way_to_the_log(tmp_path, broker_log):
    """Control bytes and invalid UTF-8 too (Mosquitto refuses them in client ids, but not every line it
    writes comes from a validated string)."""
    from broker.mosquitto.supervisor import MosquittoSupervisor

    sup = MosquittoSupervisor("mosquitto", tmp_path / "m.conf", "127.0.0.1", 1)
    sup._line(b"Client x\x1b[2J\xe2\x80\xae\xff said hi\r")
    assert broker_log == ["mosquitto: Client x\\x1b[2J\\u202e\\\\xff said hi"]
