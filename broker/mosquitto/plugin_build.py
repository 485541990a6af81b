"""Build the Mosquitto registry plugin (registry_plugin.c + registry_core.c) on the machine that runs it.

The plugin is compiled here rather than shipped because it must match the installed
broker's plugin ABI; Debian's mosquitto-dev headers are the contract. Builds are cached
by content hash, so every caller (tests, `serve`, an operator) shares one .so per source.
"""

from __future__ import annotations

import hashlib
import os
import shlex
import shutil
import subprocess
import tempfile
from pathlib import Path

from store import location

_HERE = Path(__file__).resolve().parent
SOURCE = _HERE / "registry_plugin.c"
# Every file that goes into the .so: the sources compiled, and the header they share (hashed too).
SOURCES = (SOURCE, _HERE / "registry_core.c")
HEADERS = (_HERE / "registry_core.h",)
HEADER = "/usr/include/mosquitto_broker.h"
OPENSSL_HEADER = "/usr/include/openssl/x509.h"
CFLAGS = ("-shared", "-fPIC", "-O2", "-Wall", "-Wextra")
# The mosquitto_* symbols resolve from the broker when it loads the plugin; libcrypto (the one Mosquitto itself
# links) reads client certificates: fingerprint, subject, issuer, serial, validity.
LDLIBS = ("-lcrypto",)
COMPILE_TIMEOUT = 120.0

_PREFIX = "cannot build the registry plugin: "


class PluginBuildError(Exception):
    """The plugin cannot be built here; str() is one line naming what is missing."""

    def __init__(self, reason: str):
        super().__init__(_PREFIX + " ".join(reason.split()))


def plugin_path(cache_dir: Path | None = None) -> Path:
    """The built plugin for the current source, compiling it into the cache if needed."""
    source = _read_source()
    digest = hashlib.sha256(source + "\0".join(CFLAGS + LDLIBS).encode()).hexdigest()[:12]
    directory = Path(cache_dir) if cache_dir is not None else location.cache_dir()
    target = directory / f"registry_plugin-{digest}.so"
    if target.is_file():
        return target
    _make_dir(directory)
    return _compile(target)


def build_plugin(output: Path) -> Path:
    """Build to an explicit path, e.g. for an operator attaching a system Mosquitto."""
    _read_source()
    output = Path(output)
    _make_dir(output.parent)
    return _compile(output)


def _read_source() -> bytes:
    """All sources and headers, each preceded by its name and length (so moving bytes between files
    changes the hash)."""
    out = bytearray()
    for path in (*SOURCES, *HEADERS):
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise PluginBuildError(f"{path} unreadable ({exc.strerror})") from None
        out += f"{path.name}\0{len(data)}\0".encode() + data
    return bytes(out)


def _make_dir(directory: Path) -> None:
    existed = directory.is_dir()
    try:
        directory.mkdir(mode=0o755, parents=True, exist_ok=True)
        if not existed:
            # mkdir's mode is filtered by the umask; the broker (maybe another user) must read it.
            directory.chmod(0o755)
    except OSError as exc:
        raise PluginBuildError(f"cannot create {directory} ({exc.strerror})") from None


def _compiler() -> list[str]:
    cc = os.environ.get("CC", "").strip() or "cc"
    try:
        argv = shlex.split(cc)  # CC may carry a wrapper or flags ("ccache gcc")
    except ValueError:
        raise PluginBuildError(f"CC={cc!r} is not a valid command line") from None
    if not argv or shutil.which(argv[0]) is None:
        what = "no C compiler" if cc == "cc" else f"no C compiler at CC={cc!r}"
        raise PluginBuildError(f"{what} (apt-get install gcc)")
    return argv


def _compile(target: Path) -> Path:
    if not os.path.isfile(HEADER):
        raise PluginBuildError(
            f"{os.path.basename(HEADER)} not found (apt-get install mosquitto-dev libmosquitto-dev)")
    if not os.path.isfile(OPENSSL_HEADER):
        raise PluginBuildError("OpenSSL's headers (openssl/x509.h) not found (apt-get install libssl-dev)")
    argv = _compiler()
    # Compile beside the target and rename: readers never see a half-written .so,
    # and two processes racing on the same cache entry both end with a whole one.
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    except OSError as exc:
        raise PluginBuildError(f"cannot write in {target.parent} ({exc.strerror})") from None
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        try:
            result = subprocess.run([*argv, *CFLAGS, "-o", str(tmp), *map(str, SOURCES), *LDLIBS],
                                    stdin=subprocess.DEVNULL, capture_output=True, text=True,
                                    errors="replace", timeout=COMPILE_TIMEOUT)
        except OSError as exc:
            raise PluginBuildError(f"cannot run {argv[0]} ({exc.strerror}) (apt-get install gcc)") from None
        except subprocess.TimeoutExpired:
            raise PluginBuildError(f"{argv[0]} did not finish within {COMPILE_TIMEOUT:.0f}s") from None
        if result.returncode != 0:
            raise PluginBuildError(f"{argv[0]} failed: {_first_error(result.stderr + result.stdout)}")
        tmp.chmod(0o644)
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return target


def _first_error(output: str) -> str:
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    for line in lines:
        if "error" in line.lower():
            return line
    return lines[0] if lines else "no diagnostic output"
