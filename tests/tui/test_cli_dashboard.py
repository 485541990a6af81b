"""The dashboard and simulate subcommands as the CLI exposes them."""

from __future__ import annotations

from click.testing import CliRunner

from cli.main import main


def test_dashboard_rejects_a_bad_mqtt_url(db_path):
    result = CliRunner().invoke(main, ["dashboard", "--db", db_path, "--mqtt", "http://nowhere"])
    assert result.exit_code == 2
    assert "mqtt://" in result.output


def test_no_subcommand_opens_the_dashboard(db_path):
    result = CliRunner().invoke(main, ["--db", db_path], env={"CLIENT_REGISTRY_MQTT": "ws://nowhere"})
    assert result.exit_code == 2  # reached the dashboard's URL check, not the command list
    assert "mqtt://" in result.output


def test_simulate_help_and_bad_url():
    runner = CliRunner()
    assert "--devices" in runner.invoke(main, ["simulate", "--help"]).output
    result = runner.invoke(main, ["simulate", "--devices", "1", "--mqtt", "http://x"])
    assert result.exit_code == 2


def test_simulate_takes_the_mqtt_given_before_the_command(tmp_path):
    """`client-registry --mqtt URL simulate`: the devices knock at URL (as --db and --mqtt may come before any
    command), not at the default :1883."""
    import socket
    import subprocess
    import sys
    from pathlib import Path

    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        listener.settimeout(20)
        port = listener.getsockname()[1]
        proc = subprocess.Popen([str(Path(sys.executable).parent / "client-registry"), "--db", str(tmp_path / "r.db"),
                                 "--mqtt", f"mqtt://127.0.0.1:{port}", "simulate", "--count", "1"],
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            conn, _ = listener.accept()  # the device's CONNECT reached this port
            conn.close()
            assert f"against 127.0.0.1:{port}" in proc.stdout.readline()
        finally:
            proc.kill()
            proc.wait()
