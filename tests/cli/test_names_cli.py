"""Names at the command line: `requests` marks look-alike names with ⚠ and the code points of their odd
characters; names typed in either Unicode form find the same request or user; undecodable names are refused."""

import json
import os
import subprocess

from store import open_registry

from .test_cli import EXE, ok, run

CYRILLIC = "s\u0435nsor-1"  # Cyrillic е among Latin letters
HYPHEN = "sensor\u20111"  # U+2011 NON-BREAKING HYPHEN
ZERO_WIDTH = "sensor\u200b-2"
COMPOSED, DECOMPOSED = "caf\u00e9-1", "cafe\u0301-1"


def record(db_path, *names):
    reg = open_registry(db_path)
    reg.unlock(300, actor="op")
    for i, name in enumerate(names):
        assert reg.record_attempt(name, "secret-pw", f"c{i}", f"10.0.0.{i}", "mqtt").accepted
    reg.close()


def line_of(out: str, needle: str) -> str:
    [line] = [line for line in out.splitlines() if needle in line and not line.startswith("⚠ #")]
    return line


def test_requests_marks_look_alike_names_with_their_code_points(db_path):
    record(db_path, "sensor-1", CYRILLIC, HYPHEN, ZERO_WIDTH)
    out = ok(db_path, "requests")
    header = out.splitlines()[0]
    assert header.split()[-1] == "LOOK-ALIKE"
    plain = line_of(out, " sensor-1 ")
    assert "⚠" not in plain and plain.rstrip().endswith("-")
    cyrillic = line_of(out, CYRILLIC)
    assert f"⚠ {CYRILLIC}" in cyrillic and cyrillic.rstrip().endswith("U+0435")
    hyphen = line_of(out, HYPHEN)
    assert f"⚠ {HYPHEN}" in hyphen and hyphen.rstrip().endswith("U+2011")
    zero_width = line_of(out, "sensor\\u200b-2")  # escaped, as every invisible character is
    assert "⚠ sensor\\u200b-2" in zero_width and zero_width.rstrip().endswith("U+200B")
    assert "\u200b" not in out
    # the reasons, one line per marked request, under the table
    reasons = [line for line in out.splitlines() if line.startswith("⚠ #")]
    assert len(reasons) == 3
    assert any(CYRILLIC in r and "mixed scripts: Latin+Cyrillic (U+0435 CYRILLIC SMALL LETTER IE)" in r
               for r in reasons)
    assert any("U+2011 NON-BREAKING HYPHEN" in r for r in reasons)
    assert any("invisible U+200B ZERO WIDTH SPACE" in r for r in reasons)


def test_requests_json_has_the_marks(db_path):
    record(db_path, "sensor-1", CYRILLIC, HYPHEN)
    rows = {r["username"]: r for r in json.loads(ok(db_path, "requests", "--json"))}
    assert rows["sensor-1"]["marks"] == []
    assert rows[CYRILLIC]["marks"] == ["mixed scripts: Latin+Cyrillic (U+0435 CYRILLIC SMALL LETTER IE)"]
    assert rows[HYPHEN]["marks"] == ["look-alike U+2011 NON-BREAKING HYPHEN (looks like '-')"]


def test_names_typed_in_either_form_are_one_name(db_path):
    record(db_path, COMPOSED)  # a device must send NFC (store.validation.nfc_problem); an operator may type either
    [row] = json.loads(ok(db_path, "requests", "--json"))
    assert row["username"] == COMPOSED and row["marks"] == []
    assert f"granted {COMPOSED}" in ok(db_path, "grant", COMPOSED)
    assert [u["name"] for u in json.loads(ok(db_path, "users", "--json"))] == [COMPOSED]
    assert "disabled" in ok(db_path, "user", "disable", DECOMPOSED)
    result = run(db_path, "user", "add", DECOMPOSED, "--password-stdin", stdin="another-pw\n")
    assert result.returncode == 1 and result.stderr.strip() == f"client-registry: user {COMPOSED!r} already exists"


def test_a_name_that_is_not_utf8_is_one_line_and_exit_1(db_path):
    open_registry(db_path).close()
    env = {**os.environ, "CLIENT_REGISTRY_DB": ""}
    for args in ([b"grant", b"sensor-\xff"], [b"user", b"disable", b"sensor-\xff"]):
        result = subprocess.run([EXE.encode(), *args, b"--db", db_path.encode()], capture_output=True, env=env,
                                timeout=60)
        err = result.stderr.decode("utf-8", "replace")
        assert result.returncode == 1, err
        assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
        assert "must be valid UTF-8" in err or "no user named 'sensor-\\udcff'" in err
