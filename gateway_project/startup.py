"""What a start of the server needs before the ASGI server runs: a free port, the schema, static files.

`make run` and `make serve` start granian with SO_REUSEPORT, so a second server on a port already in
use would silently share it with the first; the port is therefore checked here first. Migrations and
collectstatic only run when something changed, which keeps a restart to one short Django start.
"""

from __future__ import annotations

import hashlib
import os
import socket
from pathlib import Path

from django.conf import settings
from django.contrib.staticfiles.finders import get_finders
from django.core.management import call_command
from django.core.management.base import CommandError

STATIC_STAMP = ".gateway-static-stamp"
# collectstatic's default ignore patterns
_IGNORE = ["CVS", ".*", "*~"]


def check_port_free(host: str, port: int) -> None:
    """Raise CommandError if something already listens on host:port.

    Binds without SO_REUSEPORT (which would let us share the port with the running server) but with
    SO_REUSEADDR, so connections of a just-stopped server lingering in TIME_WAIT do not count.
    """
    try:
        infos = socket.getaddrinfo(host.strip("[]"), port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise CommandError(f"HOST={host}: cannot resolve it ({exc})") from None
    family, socktype, proto, _name, address = infos[0]
    with socket.socket(family, socktype, proto) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(address)
        except OSError as exc:
            raise CommandError(
                f"cannot listen on {host}:{port}: {exc.strerror}. Another server (perhaps an earlier "
                f"`make run`) is using the port: stop it, or pick another one, e.g. `make run PORT={port + 1}`."
            ) from None


def pending_migrations() -> bool:
    from django.db import connection
    from django.db.migrations.executor import MigrationExecutor

    executor = MigrationExecutor(connection)
    return bool(executor.migration_plan(executor.loader.graph.leaf_nodes()))


def migrate_if_needed() -> bool:
    if not pending_migrations():
        return False
    call_command("migrate", interactive=False, verbosity=0)
    return True


def static_fingerprint() -> str:
    """A digest of every static source file (name, size, mtime) and the storage that collects them."""
    digest = hashlib.sha256(settings.STORAGES["staticfiles"]["BACKEND"].encode())
    entries = []
    for finder in get_finders():
        for path, storage in finder.list(_IGNORE):
            prefix = getattr(storage, "prefix", None) or ""
            stat = os.stat(storage.path(path))
            entries.append(f"{prefix}/{path}\0{stat.st_size}\0{stat.st_mtime_ns}")
    for entry in sorted(entries):
        digest.update(entry.encode() + b"\n")
    return digest.hexdigest()


def collectstatic_if_needed() -> bool:
    """Run collectstatic only when a static source changed since the last collection."""
    root = Path(settings.STATIC_ROOT)
    stamp = root / STATIC_STAMP
    fingerprint = static_fingerprint()
    manifest_ok = "Manifest" not in settings.STORAGES["staticfiles"]["BACKEND"] or (root / "staticfiles.json").exists()
    if manifest_ok and stamp.exists() and stamp.read_text() == fingerprint:
        return False
    call_command("collectstatic", interactive=False, verbosity=0)
    stamp.write_text(fingerprint)
    return True
