"""A throwaway PostgreSQL cluster on 127.0.0.1 for tests and benchmarks (Debian's `postgresql` binaries).

`initdb` runs in a fresh temporary directory, the server listens on a free local port with its unix socket in
that directory, and everything is removed on stop. Run as root, the server runs as the `postgres` user.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile


class PostgresUnavailable(RuntimeError):
    """The PostgreSQL server binaries are not installed (run scripts/ensure-postgres.sh)."""


def find_bin_dir() -> str:
    """The newest /usr/lib/postgresql/*/bin holding initdb, or PostgresUnavailable."""
    candidates = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda path: int(path.split("/")[4]), reverse=True
    )
    if not candidates:
        raise PostgresUnavailable("PostgreSQL binaries not found in /usr/lib/postgresql/*/bin (scripts/ensure-postgres.sh)")
    return os.path.dirname(candidates[0])


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class PostgresCluster:
    """`with PostgresCluster() as pg: pg.url` — a private server; `durable=False` turns fsync off (tests only)."""

    def __init__(self, *, durable: bool = True, database: str = "otel_audit") -> None:
        self.bin_dir = find_bin_dir()
        self.durable = durable
        self.database = database
        self.port = 0
        self.root = ""
        self._run_as: list[str] = []

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{self.database}"

    def _run(self, *args: str) -> None:
        command = [*self._run_as, *args]
        result = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
        if result.returncode != 0:
            raise RuntimeError(f"{' '.join(args[:2])} failed ({result.returncode}): {result.stderr.strip()[-2000:]}")

    def start(self) -> PostgresCluster:
        self.root = tempfile.mkdtemp(prefix="otel-audit-pg-")
        if os.geteuid() == 0:
            user = pwd.getpwnam("postgres")
            os.chown(self.root, user.pw_uid, user.pw_gid)
            self._run_as = ["runuser", "-u", "postgres", "--"]
        data = os.path.join(self.root, "data")
        self._run(f"{self.bin_dir}/initdb", "-D", data, "-U", "postgres", "-A", "trust", "-E", "UTF8", "--no-locale")
        settings = f"-c listen_addresses=127.0.0.1 -c unix_socket_directories={self.root} -c max_connections=50"
        if not self.durable:
            settings += " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        for attempt in range(5):
            self.port = _free_port()
            try:
                self._run(
                    f"{self.bin_dir}/pg_ctl", "-D", data, "-w", "-t", "60", "-l", os.path.join(self.root, "log"),
                    "-o", f"-p {self.port} {settings}", "start",
                )
                break
            except RuntimeError:
                if attempt == 4:
                    raise
        self._run(f"{self.bin_dir}/createdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", self.database)
        return self

    def stop(self) -> None:
        if not self.root:
            return
        data = os.path.join(self.root, "data")
        subprocess.run(
            [*self._run_as, f"{self.bin_dir}/pg_ctl", "-D", data, "-m", "immediate", "-w", "-t", "30", "stop"],
            capture_output=True, timeout=60, check=False,
        )
        shutil.rmtree(self.root, ignore_errors=True)
        self.root = ""

    def __enter__(self) -> PostgresCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
