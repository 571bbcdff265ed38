"""A real one-node SLURM cluster for the tests: munged, slurmctld and slurmd from Debian's packages.

Started with its own slurm.conf, ports and state folder in a temporary directory, so it touches
nothing of a SLURM the machine may already run; the daemons it started are stopped by their pid
files. No accounting: `sacct` has no data here, as on many small clusters, and the sweep does not
need it.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

PACKAGES = ("slurmctld", "slurmd", "sbatch", "squeue", "scancel", "munged", "munge")
HOW = "apt-get install slurm-wlm munge (as root; .ci/run does it when it can)"


def unavailable() -> str | None:
    """Why a cluster cannot start here, or None when it can."""
    if missing := [tool for tool in PACKAGES if shutil.which(tool) is None]:
        return f"SLURM tests need {', '.join(missing)}: {HOW}"
    if os.geteuid() != 0:
        return "SLURM tests start slurmd and munged, which needs root; run them as root"
    if not Path("/etc/munge/munge.key").exists():
        return f"SLURM tests need /etc/munge/munge.key: {HOW}"
    return None


def _short_host() -> str:
    """The name SLURM's daemons know themselves by: the host name up to its first dot."""
    return socket.gethostname().split(".")[0]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _memory_mb() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) // 1024 * 9 // 10
    return 1024


def _munge_works() -> bool:
    try:
        enc = subprocess.run(["munge", "-n"], capture_output=True, timeout=10, check=False)
        dec = subprocess.run(["unmunge"], input=enc.stdout, capture_output=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return enc.returncode == 0 and dec.returncode == 0


def config(folder: Path, host: str, cpus: int) -> str:
    """slurm.conf for one node with this machine's CPUs, in `folder`, on two free ports."""
    return "\n".join(
        [
            "ClusterName=tosttest",
            f"SlurmctldHost={host}(127.0.0.1)",  # addresses given: the host name need not resolve
            f"SlurmctldPort={_free_port()}",
            f"SlurmdPort={_free_port()}",
            "SlurmUser=root",
            "SlurmdUser=root",
            "AuthType=auth/munge",
            f"StateSaveLocation={folder / 'state'}",
            f"SlurmdSpoolDir={folder / 'spool'}",
            f"SlurmctldPidFile={folder / 'slurmctld.pid'}",
            f"SlurmdPidFile={folder / 'slurmd.pid'}",
            f"SlurmctldLogFile={folder / 'slurmctld.log'}",
            f"SlurmdLogFile={folder / 'slurmd.log'}",
            "ProctrackType=proctrack/linuxproc",
            "TaskPlugin=task/none",
            "SelectType=select/cons_tres",
            "SelectTypeParameters=CR_CPU",
            "AccountingStorageType=accounting_storage/none",
            "JobCompType=jobcomp/none",
            "JobAcctGatherType=jobacct_gather/none",
            "MpiDefault=none",
            "ReturnToService=2",
            f"NodeName={host} NodeAddr=127.0.0.1 CPUs={cpus} RealMemory={_memory_mb()} State=UNKNOWN",
            f"PartitionName=debug Nodes={host} Default=YES MaxTime=INFINITE State=UP",
            "",
        ]
    )


@dataclass
class Cluster:
    """The running cluster: clients find it through SLURM_CONF (see `env`)."""

    folder: Path
    started: list[Path] = field(default_factory=list)  # pid files of the daemons we started

    @property
    def conf(self) -> Path:
        return self.folder / "slurm.conf"

    def env(self) -> dict[str, str]:
        return {**os.environ, "SLURM_CONF": str(self.conf)}

    def squeue(self) -> list[str]:
        """Every job the cluster still lists, `id|state` per line."""
        cmd = ["squeue", "-h", "-r", "-t", "all", "-o", "%i|%T"]
        return subprocess.run(cmd, env=self.env(), capture_output=True, text=True, check=True).stdout.split()

    def start(self) -> Cluster:
        for sub in ("state", "spool"):
            (self.folder / sub).mkdir(parents=True, exist_ok=True)
        if not _munge_works():
            run_dir = Path("/run/munge")
            run_dir.mkdir(parents=True, exist_ok=True)
            shutil.chown(run_dir, "munge", "munge")
            pid = run_dir / "munged-tosttest.pid"  # munged runs as munge: it cannot write our folder
            cmd = ["runuser", "-u", "munge", "--", "munged", "--force", f"--pid-file={pid}"]
            subprocess.run(cmd, check=True)
            self.started.append(pid)
            _until(_munge_works, 10, "munged did not answer")
        self.conf.write_text(config(self.folder, _short_host(), os.cpu_count() or 1))
        for daemon in ("slurmctld", "slurmd"):
            subprocess.run([daemon, "-f", str(self.conf)], env=self.env(), check=True)
            self.started.append(self.folder / f"{daemon}.pid")
        try:
            _until(self._idle, 30, "the node did not come up")
        except RuntimeError:
            logs = [f"{n}: {_tail(self.folder / n)}" for n in ("slurmctld.log", "slurmd.log")]
            self.stop()
            raise RuntimeError(f"the one-node SLURM did not come up; {'; '.join(logs)}") from None
        return self

    def _idle(self) -> bool:
        cmd = ["sinfo", "-h", "-o", "%T"]
        proc = subprocess.run(cmd, env=self.env(), capture_output=True, text=True, check=False)
        return proc.returncode == 0 and proc.stdout.strip() == "idle"

    def stop(self) -> None:
        """Stop the daemons this cluster started, newest first, by the pids in their pid files."""
        for pid_file in reversed(self.started):
            try:
                pid = int(pid_file.read_text().split()[0])
                os.kill(pid, signal.SIGTERM)
            except (OSError, ValueError, IndexError):
                continue
            _until(lambda p=pid: not _alive(p), 15, "", fail=False)


def _tail(path: Path) -> str:
    try:
        return " | ".join(path.read_text(errors="replace").splitlines()[-3:])
    except OSError:
        return "(no log)"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    return True


def _until(ok, seconds: float, message: str, fail: bool = True) -> None:
    deadline = time.monotonic() + seconds
    while not ok():
        if time.monotonic() > deadline:
            if fail:
                raise RuntimeError(message)
            return
        time.sleep(0.2)
