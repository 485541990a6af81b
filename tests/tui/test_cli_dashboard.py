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
