"""A real single-node Slurm cluster (22.05) on this machine, for tests and benchmarks.

Test tooling, not part of the installed package: tests import it as ``support.slurm_local``
(pytest puts ``tests/`` on ``sys.path``); ``python -m bench.benchmarks.slurm``, run from the
repository, puts the repository's ``tests/`` folder on ``sys.path`` itself.

munged, MariaDB, slurmdbd, slurmctld and slurmd run with all their state under one temporary
folder; ``SLURM_CONF`` points every daemon and client (and, inherited, every job) at it. Each
daemon is waited for with a deadline and stopped by PID afterwards (jobs cancelled first, slurmd
before slurmctld). Needs root and Debian's packages; ``ensure_installed`` installs them with apt.
Facts this relies on (checked with Slurm 22.05, submitit 1.5.4): submitit polls ``sacct``, so
accounting (slurmdbd + MariaDB) must run; slurmctld and sacct reach slurmdbd's munge socket via
``AccountingStoragePass``; ``NodeName`` must equal ``hostname -s``; ``cred_expire=10`` lets a
requeued job restart after ~11 s.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

PACKAGES = ["slurmctld", "slurmd", "slurm-client", "munge", "slurmdbd", "mariadb-server"]
BINARIES = ["slurmctld", "slurmd", "slurmdbd", "munged", "mariadbd", "mariadb-install-db", "sbatch",
            "sacct", "scontrol", "sacctmgr"]


def _which(name: str) -> str | None:
    return shutil.which(name) or next((f"{d}/{name}" for d in ("/usr/sbin", "/usr/bin", "/sbin")
                                       if os.access(f"{d}/{name}", os.X_OK)), None)


def unavailable_reason() -> str | None:
    """Why a cluster cannot be started here (None if it can, after installing if needed)."""
    if os.name != "posix" or os.geteuid() != 0:
        return "the Slurm tests start slurmctld/slurmd/slurmdbd/MariaDB as root; not running as root"
    if all(_which(b) for b in BINARIES):
        return None
    if not shutil.which("apt-get"):
        return "Slurm is not installed and apt-get is not available to install it"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in (["apt-get", "update", "-q"], ["apt-get", "install", "-y", "-q", *PACKAGES]):
        r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)
        if r.returncode != 0:
            return f"installing Slurm with apt failed: {' '.join(cmd)}: {r.stderr[-500:]}"
    missing = [b for b in BINARIES if not _which(b)]
    return f"Slurm binaries missing after install: {missing}" if missing else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for(what: str, check, deadline_s: float = 30.0) -> None:
    end = time.time() + deadline_s
    while time.time() < end:
        try:
            if check():
                return
        except Exception:
            pass
        time.sleep(0.2)
    raise TimeoutError(f"{what} did not come up within {deadline_s:.0f} s")


class SlurmCluster:
    def __init__(self, root: Path, cpus: int | None = None) -> None:
        self.root = Path(root)
        self.host = socket.gethostname().split(".")[0]
        self.cpus = cpus or os.cpu_count() or 1
        self.procs: dict[str, int] = {}
        self.env = {**os.environ, "SLURM_CONF": str(self.root / "etc" / "slurm.conf")}

    # ----------------------------------------------------------------------------- helpers
    def run(self, *cmd: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess:
        return subprocess.run(list(cmd), capture_output=True, text=True, env=self.env,
                              check=check, timeout=timeout)

    def _pid(self, name: str, pidfile: Path, deadline_s: float = 30.0) -> int:
        _wait_for(f"{name} pid file", lambda: pidfile.is_file() and pidfile.read_text().strip(),
                  deadline_s)
        pid = int(pidfile.read_text().split()[0])
        self.procs[name] = pid
        return pid

    # ------------------------------------------------------------------------------- start
    def start(self) -> "SlurmCluster":
        r = self.root
        for d in ("etc", "munge", "mysql", "state", "spool", "log", "run"):
            (r / d).mkdir(parents=True, exist_ok=True)
        os.chmod(r, 0o755)
        os.chmod(r / "munge", 0o755)  # munge's socket folder must be 755
        self.munge_socket = r / "munge" / "munge.socket"
        key = r / "munge" / "munge.key"
        subprocess.run([_which("mungekey") or "mungekey", "--create", f"--keyfile={key}", "--force"],
                       check=True, capture_output=True)
        os.chmod(key, 0o600)
        subprocess.run([_which("munged"), f"--key-file={key}", f"--socket={self.munge_socket}",
                        f"--pid-file={r / 'run' / 'munged.pid'}", f"--log-file={r / 'log' / 'munged.log'}",
                        f"--seed-file={r / 'munge' / 'seed'}", "--force"], check=True, capture_output=True)
        self._pid("munged", r / "run" / "munged.pid")

        db_port, dbd_port = _free_port(), _free_port()
        self.ctld_port, self.slurmd_port = _free_port(), _free_port()
        subprocess.run([_which("mariadb-install-db"), f"--datadir={r / 'mysql'}", "--user=root",
                        "--auth-root-authentication-method=normal", "--skip-test-db"],
                       check=True, capture_output=True, timeout=120)
        sock = r / "run" / "mysqld.sock"
        subprocess.Popen([_which("mariadbd"), "--no-defaults", f"--datadir={r / 'mysql'}", "--user=root",
                          f"--socket={sock}", f"--port={db_port}", "--bind-address=127.0.0.1",
                          f"--pid-file={r / 'run' / 'mysqld.pid'}", f"--log-error={r / 'log' / 'mysqld.log'}",
                          "--skip-name-resolve"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                         start_new_session=True)
        self._pid("mariadbd", r / "run" / "mysqld.pid")
        mariadb = [shutil.which("mariadb") or "mariadb", f"--socket={sock}", "-uroot"]
        _wait_for("MariaDB", lambda: subprocess.run(mariadb + ["-e", "select 1"], capture_output=True).returncode == 0)
        subprocess.run(mariadb + ["-e", "CREATE USER 'slurm'@'127.0.0.1' IDENTIFIED BY 'slurm'; "
                                  "GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';"], check=True,
                       capture_output=True)

        etc = r / "etc"
        (etc / "slurmdbd.conf").write_text(f"""AuthType=auth/munge
AuthInfo=socket={self.munge_socket}
DbdHost=localhost
DbdAddr=127.0.0.1
DbdPort={dbd_port}
SlurmUser=root
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort={db_port}
StorageUser=slurm
StoragePass=slurm
StorageLoc=slurm_acct_db
PidFile={r / 'run' / 'slurmdbd.pid'}
LogFile={r / 'log' / 'slurmdbd.log'}
""")
        os.chmod(etc / "slurmdbd.conf", 0o600)
        (etc / "slurm.conf").write_text(f"""ClusterName=benchtest
SlurmctldHost={self.host}(127.0.0.1)
SlurmctldPort={self.ctld_port}
SlurmdPort={self.slurmd_port}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket={self.munge_socket},cred_expire=10
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStoragePort={dbd_port}
AccountingStoragePass={self.munge_socket}
JobAcctGatherType=jobacct_gather/none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
ReturnToService=2
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
StateSaveLocation={r / 'state'}
SlurmdSpoolDir={r / 'spool'}
SlurmctldPidFile={r / 'run' / 'slurmctld.pid'}
SlurmdPidFile={r / 'run' / 'slurmd.pid'}
SlurmctldLogFile={r / 'log' / 'slurmctld.log'}
SlurmdLogFile={r / 'log' / 'slurmd.log'}
MinJobAge=600
KillWait=5
InactiveLimit=0
NodeName={self.host} NodeAddr=127.0.0.1 CPUs={self.cpus} RealMemory=4000 State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP OverSubscribe=FORCE:4
""")
        self.run(_which("slurmdbd"))
        self._pid("slurmdbd", r / "run" / "slurmdbd.pid")
        _wait_for("slurmdbd port", lambda: socket.create_connection(("127.0.0.1", dbd_port), 1).close() or True)
        self.run(_which("sacctmgr"), "-i", "add", "cluster", "benchtest", check=False)
        self.run(_which("slurmctld"), "-c")
        self._pid("slurmctld", r / "run" / "slurmctld.pid")
        _wait_for("slurmctld", lambda: self.run("scontrol", "ping", check=False).returncode == 0)
        self.run(_which("slurmd"))
        self._pid("slurmd", r / "run" / "slurmd.pid")
        _wait_for("node idle", lambda: "idle" in self.run("sinfo", "-h", "-o", "%t", check=False).stdout)
        _wait_for("sacct", lambda: self.run("sacct", "-n", "-X", check=False).returncode == 0)
        return self

    # -------------------------------------------------------------------------------- stop
    def stop(self) -> None:
        self.run("scancel", "--full", "-u", "root", check=False, timeout=20) if self.procs.get("slurmctld") else None
        for name in ("slurmd", "slurmctld", "slurmdbd", "mariadbd", "munged"):
            pid = self.procs.pop(name, None)
            if pid is None:
                continue
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                continue
            end = time.time() + 5
            while time.time() < end:
                try:
                    os.kill(pid, 0)
                except ProcessLookupError:
                    break
                time.sleep(0.1)
            else:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass

    def __enter__(self) -> "SlurmCluster":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
