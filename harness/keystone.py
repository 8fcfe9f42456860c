"""A real Keystone from PyPI, its catalog, and the real ``openstack`` CLI.

Keystone runs from a venv of its own (``peers/keystone/ensure-keystone-venv.sh``,
which ``make peer-keystone`` runs: a service of its own, with its own pins, as
deployments run it) under gunicorn on a free 127.0.0.1 port, with a SQLite
database, fernet and credential keys in a temp dir, and osprofiler enabled
with its own OTLP driver (``connection_string = otlp://127.0.0.1:PORT``), so
its spans go to the same receiver as Zaqar's. It is stopped by pid.
"""

from __future__ import annotations

import grp
import os
import pwd
import subprocess
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from zaqar_otel.demo.processes import ServerProcess, call, free_port, render_conf

ROOT = Path(__file__).resolve().parent.parent
KEYSTONE_VERSION = os.environ.get("ZAQAR_OTEL_KEYSTONE_VERSION", "30.0.0")
REGION = "RegionOne"
DOMAIN = "Default"


def keystone_venv() -> Path:
    """Where peers/keystone/ensure-keystone-venv.sh puts (or has put)
    Keystone's venv."""
    return ROOT / ".cache" / f"keystone-venv-{KEYSTONE_VERSION}"


def keystone_venv_ready() -> bool:
    return (keystone_venv() / ".installed").exists()


@dataclass(frozen=True)
class Credentials:
    user: str
    password: str
    project: str

    def os_env(self, auth_url: str) -> dict[str, str]:
        """The OS_* variables the ``openstack`` CLI reads for password auth."""
        return {
            "OS_AUTH_URL": auth_url,
            "OS_AUTH_TYPE": "password",
            "OS_USERNAME": self.user,
            "OS_PASSWORD": self.password,
            "OS_PROJECT_NAME": self.project,
            "OS_USER_DOMAIN_NAME": DOMAIN,
            "OS_PROJECT_DOMAIN_NAME": DOMAIN,
            "OS_IDENTITY_API_VERSION": "3",
            "OS_REGION_NAME": REGION,
            "OS_INTERFACE": "public",
        }


class KeystoneError(RuntimeError):
    """Keystone could not be set up or started; the message has the log tail."""


class KeystoneServer(ServerProcess):
    """Keystone under gunicorn; ``start()`` also bootstraps it.

    ``profiler`` is the ``[profiler]`` section of keystone.conf. Each
    ``start()`` takes a new free port; ``stop()`` removes the temp dir (the
    log stays readable through ``log_text()``).
    """

    name = "keystone"
    log_name = "gunicorn.log"
    # gunicorn's master stops its workers on SIGTERM.
    stop_timeout = 15.0
    close_grace = None
    keeps_data = False
    error = KeystoneError

    def __init__(
        self,
        profiler: Mapping[str, str],
        *,
        venv: Path | None = None,
        startup_timeout: float = 60.0,
    ) -> None:
        super().__init__(port=0)
        self.venv = Path(venv or keystone_venv())
        self.profiler = dict(profiler)
        self.start_timeout = startup_timeout
        self.config_path = self.dir / "keystone.conf"
        self.keystone_log = self.dir / "keystone.log"
        self.admin = Credentials("admin", "admin-" + uuid.uuid4().hex[:12], "admin")
        self._admin_token: str | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def auth_url(self) -> str:
        return self.url + "/v3"

    # -- setup ---------------------------------------------------------------

    def config(self) -> dict[str, dict[str, str]]:
        d = self.dir
        return {
            "DEFAULT": {"log_file": str(self.keystone_log), "debug": "false"},
            "database": {"connection": f"sqlite:///{d}/keystone.sqlite"},
            "token": {"provider": "fernet"},
            "fernet_tokens": {"key_repository": str(d / "fernet-keys")},
            "fernet_receipts": {"key_repository": str(d / "fernet-keys")},
            "credential": {"key_repository": str(d / "credential-keys")},
            "profiler": self.profiler,
        }

    def _env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("OS_")}
        env.update(
            HOME=str(self.dir),
            OS_KEYSTONE_CONFIG_FILES=str(self.config_path),
            # osprofiler's driver exports through a BatchSpanProcessor with the
            # SDK's defaults: flush every 100 ms rather than every 5 s.
            OTEL_BSP_SCHEDULE_DELAY="100",
            PATH=str(self.venv / "bin") + os.pathsep + env.get("PATH", ""),
        )
        return env

    def _manage(self, *args: str) -> None:
        argv = [str(self.venv / "bin" / "keystone-manage"),
                "--config-file", str(self.config_path), *args]
        done = subprocess.run(
            argv, cwd=self.dir, env=self._env(), capture_output=True, text=True,
            timeout=300, check=False)
        if done.returncode:
            raise KeystoneError(
                f"keystone-manage {args[0]} exited with {done.returncode}\n"
                f"{done.stdout}{done.stderr}\n{self.log_tail()}")

    def _prepare(self) -> None:
        self.port = free_port()
        self.config_path.write_text(render_conf(self.config()))
        user, group = _user_and_group()
        self._manage("db_sync")
        self._manage("fernet_setup", "--keystone-user", user,
                     "--keystone-group", group)
        self._manage("credential_setup", "--keystone-user", user,
                     "--keystone-group", group)
        self._manage(
            "bootstrap",
            "--bootstrap-password", self.admin.password,
            "--bootstrap-username", self.admin.user,
            "--bootstrap-project-name", self.admin.project,
            "--bootstrap-role-name", "admin",
            "--bootstrap-service-name", "keystone",
            "--bootstrap-region-id", REGION,
            "--bootstrap-admin-url", self.auth_url,
            "--bootstrap-internal-url", self.auth_url,
            "--bootstrap-public-url", self.auth_url,
        )  # fmt: skip
        # Keystone parses sys.argv with oslo.config, which refuses gunicorn's
        # arguments: the settings go in ./gunicorn.conf.py, which gunicorn
        # reads from its working directory by default.
        (self.dir / "gunicorn.conf.py").write_text(
            f'bind = "127.0.0.1:{self.port}"\n'
            # One sync worker serves one request at a time, which osprofiler's
            # driver (one process-wide span stack) needs.
            "workers = 1\n"
            "timeout = 120\n"
            'wsgi_app = "keystone.wsgi.api:application"\n')

    def _argv(self) -> list[str]:
        return [str(self.venv / "bin" / "gunicorn")]

    def _ping(self) -> None:
        status, _, _ = self.request("GET", "/v3", timeout=5.0)
        if status != 200:
            raise KeystoneError(f"HTTP {status}")

    # -- the identity API --------------------------------------------------------

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        headers: Mapping[str, str] | None = None,
        timeout: float = 30.0,
    ) -> tuple[int, dict[str, str], Any]:
        return call(self.port, method, path, body, headers, timeout)

    def token(self, creds: Credentials) -> str:
        body = {"auth": {
            "identity": {"methods": ["password"], "password": {"user": {
                "name": creds.user, "password": creds.password,
                "domain": {"name": DOMAIN}}}},
            "scope": {"project": {"name": creds.project, "domain": {"name": DOMAIN}}},
        }}
        status, headers, payload = self.request("POST", "/v3/auth/tokens", body)
        if status != 201:
            raise KeystoneError(f"token for {creds.user}: HTTP {status} {payload}")
        return headers["X-Subject-Token"]

    def admin_call(self, method: str, path: str, body: Any = None,
                   expect: Sequence[int] = (200, 201, 204)) -> Any:
        if self._admin_token is None:
            self._admin_token = self.token(self.admin)
        status, _, payload = self.request(
            method, path, body, headers={"X-Auth-Token": self._admin_token})
        if status not in expect:
            raise KeystoneError(f"{method} {path}: HTTP {status} {payload}")
        return payload

    def _role_id(self, name: str) -> str:
        roles = self.admin_call("GET", f"/v3/roles?name={name}")["roles"]
        return roles[0]["id"]

    def add_user(self, name: str, project: str, role: str) -> Credentials:
        """``openstack project create`` (if new), ``user create``, ``role add``."""
        found = self.admin_call("GET", f"/v3/projects?name={project}")["projects"]
        if found:
            project_id = found[0]["id"]
        else:
            project_id = self.admin_call("POST", "/v3/projects", {"project": {
                "name": project, "domain_id": "default"}})["project"]["id"]
        password = name + "-" + uuid.uuid4().hex[:12]
        user_id = self.admin_call("POST", "/v3/users", {"user": {
            "name": name, "password": password, "domain_id": "default",
            "default_project_id": project_id}})["user"]["id"]
        self.admin_call(
            "PUT", f"/v3/projects/{project_id}/users/{user_id}/roles/"
            + self._role_id(role))
        return Credentials(name, password, project)

    def register_service(self, name: str, type_: str, url: str) -> None:
        """``openstack service create`` + ``endpoint create`` per interface."""
        service_id = self.admin_call("POST", "/v3/services", {"service": {
            "name": name, "type": type_, "enabled": True}})["service"]["id"]
        for interface in ("public", "internal", "admin"):
            self.admin_call("POST", "/v3/endpoints", {"endpoint": {
                "service_id": service_id, "interface": interface,
                "region_id": REGION, "url": url, "enabled": True}})

    # -- logs ------------------------------------------------------------------

    def log_text(self) -> str:
        parts = [path.read_text(errors="replace")
                 for path in (self.log_path, self.keystone_log) if path.exists()]
        return "\n".join(parts) or self._log_cache


def _user_and_group() -> tuple[str, str]:
    """Who owns the key repositories: the user the test runs as."""
    return pwd.getpwuid(os.getuid()).pw_name, grp.getgrgid(os.getgid()).gr_name


# -- the openstack CLI ----------------------------------------------------------


@dataclass
class CliResult:
    argv: list[str]
    returncode: int
    stdout: str
    stderr: str
    seconds: float

    @property
    def trace_id(self) -> str | None:
        """The base_id ``--os-profile`` prints as ``Trace ID: <uuid>``."""
        for line in self.stderr.splitlines():
            if line.startswith("Trace ID: "):
                return line.split(": ", 1)[1].strip()
        return None


def openstack(
    args: Sequence[str],
    *,
    env: Mapping[str, str],
    profile_key: str | None,
    bin_dir: str | os.PathLike[str],
    cwd: str | os.PathLike[str],
    timeout: float = 120.0,
) -> CliResult:
    """Run the real ``openstack`` CLI; only ``env``'s OS_* variables count.

    HOME is ``cwd``, so no clouds.yaml of the machine's user is read.
    """
    argv = [str(Path(bin_dir) / "openstack")]
    if profile_key:
        argv += ["--os-profile", profile_key]
    argv += list(args)
    clean = {k: v for k, v in os.environ.items() if not k.startswith("OS_")}
    clean.update(HOME=str(cwd), **env)
    start = time.monotonic()
    done = subprocess.run(
        argv, cwd=cwd, env=clean, capture_output=True, text=True,
        timeout=timeout, check=False)
    return CliResult(argv, done.returncode, done.stdout, done.stderr,
                     time.monotonic() - start)
