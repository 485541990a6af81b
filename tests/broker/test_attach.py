"""Attaching to a Mosquitto the site runs: `client-registry mosquitto-config`, then the operator's steps as it
prints them (as root, the site's Mosquitto drops to the `mosquitto` user as systemd's does), then
`serve --broker-url`: the implicit flow works through a broker the registry did not start."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from tests.broker.clients import mosquitto_pub
from tests.broker.test_serve import CLI, wait_serving
from tests.tui.conftest import free_port, wait_port


def cli(db: str, *args: str) -> subprocess.CompletedProcess:
    res = subprocess.run([CLI, "--db", db, *args], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    return res


@pytest.fixture
def site():
    """A folder the site's Mosquitto (user `mosquitto`) can reach, like /etc/mosquitto and /var/lib/mosquitto."""
    folder = Path(tempfile.mkdtemp(prefix="cr-site-"))
    folder.chmod(0o755)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def test_mosquitto_config_then_serve_attached(site, tmp_path):
    if os.geteuid() != 0:
        pytest.fail("this test plays the site's administrator: run it as root (CI does)")
    db = str(tmp_path / "registry.db")
    port, http_port = free_port(), free_port()
    conf_d, dynsec, plugin, sock = (site / "conf.d" / "client-registry.conf", site / "dynamic-security.json",
                                    site / "lib" / "registry_plugin.so", site / "run" / "registry.sock")
    res = cli(db, "mosquitto-config", "--conf-d", str(conf_d), "--dynsec-file", str(dynsec), "--plugin",
              str(plugin), "--socket", str(sock), "--listener", f"127.0.0.1:{port}")
    snippet = res.stdout
    assert f"plugin {plugin}" in snippet and f"plugin_opt_socket {sock}" in snippet
    assert snippet.index("mosquitto_dynamic_security.so") < snippet.index(str(plugin))  # dynsec answers first
    steps = [line.strip() for line in res.stderr.splitlines()]
    assert f"save the snippet above as {conf_d}" in steps and "systemctl restart mosquitto" in steps

    # The operator's steps, as printed (systemctl replaced by starting the site's Mosquitto by hand).
    conf_d.parent.mkdir()
    conf_d.write_text(snippet)
    shutil.chown(dynsec, "mosquitto", "mosquitto")
    sock.parent.mkdir(mode=0o750)
    shutil.chown(sock.parent, group="mosquitto")
    main_conf = site / "mosquitto.conf"
    main_conf.write_text(f"include_dir {conf_d.parent}\nlog_dest stderr\npersistence false\n")
    broker = subprocess.Popen(["mosquitto", "-c", str(main_conf)], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    serve = None
    try:
        wait_port(port)
        serve_line = next(s for s in steps if " serve --broker-url " in s)
        assert f"--broker-url mqtt://127.0.0.1:{port}" in serve_line and "--socket-group mosquitto" in serve_line
        serve = subprocess.Popen(
            [CLI, "--db", db, "serve", "--broker-url", f"mqtt://127.0.0.1:{port}", "--plugin-socket", str(sock),
             "--socket-group", "mosquitto", "--http-bind", f"127.0.0.1:{http_port}"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=dict(os.environ, PYTHONUNBUFFERED="1"))
        _, _, lines = wait_serving(serve)
        assert any(f"attached to mqtt://127.0.0.1:{port}" in line for line in lines)
        assert (sock.stat().st_mode & 0o777) == 0o660 and sock.stat().st_gid == shutil._get_gid("mosquitto")

        cli(db, "unlock")
        assert mosquitto_pub(port, "site-dev", "site-secret").returncode != 0  # forwarded, recorded, refused
        [request] = [line for line in cli(db, "requests").stdout.splitlines() if "site-dev" in line]
        cli(db, "grant", "site-dev", "--permission", "plant/{username}/#=write")
        deadline = 50
        while mosquitto_pub(port, "site-dev", "site-secret", topic="plant/site-dev/x").returncode != 0:
            deadline -= 1
            assert deadline, "the granted device never got in through the site's broker"
        assert mosquitto_pub(port, "site-dev", "wrong-secret").returncode != 0
    finally:
        if serve is not None:
            serve.terminate()
            serve.communicate(timeout=20)
        broker.terminate()
        broker.wait(10)
    # The site's broker was not ours to stop; the service left it running until the test stopped it.
    assert serve is not None and serve.returncode == 0
