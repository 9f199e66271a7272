"""A throwaway one-node SLURM cluster on loopback for the tests marked `slurm`.

Started once per test session in a temporary folder: munged (its own key, socket, pid and log files
there, so a system MUNGE is never touched), then slurmctld and slurmd in the foreground (`-D`) as
child processes of the test session, on free ports of 127.0.0.1, with a slurm.conf written for
this machine (one node `localhost`, its real CPUs and memory, partition `debug`). Authentication is
real MUNGE (auth/munge, cred/munge): the client commands find the socket in slurm.conf's AuthInfo,
so SLURM_CONF is the only variable they need. The daemons run as root: slurmd starts jobs as the
user who submitted them, and SlurmUser=root keeps the state files ours.

`slurm_cluster` yields a `SlurmCluster`: its `conf`, its `env` (what to add to a client's
environment), `run()` for sbatch/squeue/scancel/scontrol/sinfo, and `activate(monkeypatch)` for code
that calls them itself (submitit). The function-scoped `slurm` fixture hands out the same cluster and
cancels whatever a test left in the queue. At the end of the session every job is cancelled, the
daemons and munged are stopped, and a process of the cluster still alive is an error.

Timings that tests must allow for (none is a limit to assert on): a job starts within ~2 s of
sbatch; a requeued job is held cred_expire + 1 s (REQUEUE_DELAY_S here, 120 s on a default cluster)
and starts ~2 s later (sched_interval), or at once after `scontrol update jobid=... StartTime=now`;
`--signal=...@N` is sent by slurmctld's time-limit check, which runs every 30 s (not configurable),
so up to ~30 s after the moment asked for.

When no cluster can be started the tests are skipped with the reason, except under CI (CI=true),
where that is a failure: CI must run them.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

PARTITION = "debug"
NODE = "localhost"
# Requeued jobs wait this long before they may start again (AuthInfo cred_expire; SLURM's default is
# 120 s). Short, so that a requeue from inside a job (submitit's checkpointing) restarts in a test.
REQUEUE_DELAY_S = 10
# Give-up limits for polling: far above what the step takes here (seconds), only so that a broken
# cluster fails with a message instead of hanging the suite.
GIVE_UP_S = 180.0
# In the environment of the daemons (and of the slurmstepd they start): how their processes are found.
MARKER = "HPSEARCH_SLURM_CLUSTER"
_SBIN = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"])
_BINARIES = ("munged", "mungekey", "slurmctld", "slurmd", "sbatch", "squeue", "scancel", "scontrol", "sinfo")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "slurm: needs a SLURM cluster (a one-node one started by the tests on loopback)")


def wait_until(check: Callable[[], object], what: str, give_up_s: float = GIVE_UP_S) -> object:
    """Poll `check` every 0.2 s until it returns something truthy; fail naming `what` after `give_up_s`."""
    deadline = time.monotonic() + give_up_s
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"gave up after {give_up_s:.0f} s waiting for {what}")
        time.sleep(0.2)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _unavailable(reason: str) -> None:
    message = f"SLURM cluster cannot be started: {reason}"
    if os.environ.get("CI"):
        pytest.fail(message + " (CI must run the slurm tests: see the Makefile's slurm-install target)")
    pytest.skip(message)


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


def _is_scriptd(pid: int) -> bool:
    return _cmdline(pid).startswith("slurmctld: slurmscriptd")


def _node_line(slurmd: str) -> str:
    """This machine as slurmd sees it (`slurmd -C`: CPUs, sockets, cores, threads, RealMemory), as node NODE.

    Declaring more than slurmd finds would drain the node, so its own count is used, not os.cpu_count().
    """
    found = subprocess.run([slurmd, "-C"], capture_output=True, text=True, timeout=60).stdout.splitlines()
    words = found[0].split() if found and found[0].startswith("NodeName=") else []
    if not words:  # an older slurmd: the CPU count and memory Python sees
        pages = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") // 2**20
        words = ["NodeName=x", f"CPUs={len(os.sched_getaffinity(0))}", f"RealMemory={pages}"]
    return " ".join([f"NodeName={NODE}", "NodeAddr=127.0.0.1", *words[1:], "State=UNKNOWN"])


def _slurm_conf(root: Path, node_line: str) -> str:
    return f"""\
ClusterName=hpsearch
SlurmctldHost={NODE}(127.0.0.1)
SlurmctldPort={_free_port()}
SlurmdPort={_free_port()}
SlurmUser=root
SlurmdUser=root
# munged of this folder; cred_expire is also how long a requeued job is held (BeginTime)
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={root}/munge/munge.socket,cred_expire={REQUEUE_DELAY_S}
StateSaveLocation={root}/state
SlurmdSpoolDir={root}/spool
SlurmctldPidFile={root}/slurmctld.pid
SlurmdPidFile={root}/slurmd.pid
SlurmctldLogFile={root}/log/slurmctld.log
SlurmdLogFile={root}/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
# no cgroups: processes are tracked through /proc, tasks are not bound to CPUs
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
# a job made eligible by time alone (a requeue's hold ending) starts at the next full scheduling pass:
# every 2 s instead of 60 (the backfill pass did not start it)
SchedulerParameters=sched_interval=2
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
MpiDefault=none
ReturnToService=2
JobRequeue=1
PreemptMode=OFF
MailProg=/bin/true
{node_line}
PartitionName={PARTITION} Nodes=ALL Default=YES MaxTime=INFINITE State=UP
"""


@dataclass
class SlurmCluster:
    """A running one-node cluster: its folder, slurm.conf and the client environment."""

    root: Path
    conf: Path
    env: dict[str, str]  # what a client (sbatch, squeue, submitit) needs added: SLURM_CONF
    daemons: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def client_env(self) -> dict[str, str]:
        """os.environ without SLURM_* variables inherited from an outer job, plus `env`."""
        clean = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
        return {**clean, **self.env}

    def activate(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Point this process's environment at the cluster (for code that runs sbatch itself, e.g. submitit)."""
        for name in [k for k in os.environ if k.startswith("SLURM_")]:
            monkeypatch.delenv(name)
        for name, value in self.env.items():
            monkeypatch.setenv(name, value)

    def run(self, *args: str, check: bool = True) -> str:
        """Run a client command (`run("squeue", "-h")`) against this cluster; its stdout."""
        done = subprocess.run(list(args), env=self.client_env(), capture_output=True, text=True, timeout=120)
        if check and done.returncode != 0:
            raise AssertionError(f"{' '.join(args)} exited {done.returncode}: {done.stderr.strip()}")
        return done.stdout

    def sbatch(self, *args: str) -> str:
        """Submit (`sbatch("--array=0-1", script)`); the job id."""
        return self.run("sbatch", "--parsable", *args).strip().split(";")[0]

    def queue(self) -> list[str]:
        """The jobs squeue lists (pending, running, completing), array tasks one by one."""
        return self.run("squeue", "-h", "-r", "-o", "%i").split()

    def job_state(self, job_id: str) -> str:
        """JobState from scontrol (still known MinJobAge = 300 s after the end): PENDING, RUNNING, COMPLETED..."""
        for word in self.run("scontrol", "-o", "show", "job", job_id).split():
            if word.startswith("JobState="):
                return word.partition("=")[2]
        raise AssertionError(f"scontrol shows no JobState for {job_id}")

    def node_state(self) -> str:
        return self.run("sinfo", "-h", "-n", NODE, "-o", "%T", check=False).strip()

    def cancel_all(self) -> None:
        """Cancel every job and wait until none is listed and no job process is left."""
        jobs = self.run("squeue", "-h", "-o", "%F").split()
        if jobs:
            self.run("scancel", *sorted(set(jobs)), check=False)
        wait_until(lambda: not self.queue(), "the SLURM queue to empty after scancel")
        try:  # slurmstepd ends a moment after the queue empties; a process that left its job's tree stays
            wait_until(lambda: not self.job_processes(), "the cancelled jobs' processes to end", give_up_s=60)
        except pytest.fail.Exception:
            left = {pid: _cmdline(pid) for pid in self.job_processes()}
            pytest.fail(f"processes of cancelled SLURM jobs still run (detached from their job?): {left}")

    def processes(self) -> list[int]:
        """Every live process of this cluster: the daemons and slurmstepd (they carry MARKER=root in their
        environment), the jobs and their children (SLURM_CONF=conf and a SLURM_JOB_ID). A process a test
        started with the client environment is not one of them."""
        daemon = f"\0{MARKER}={self.root}\0".encode()
        job = f"\0SLURM_CONF={self.conf}\0".encode()
        found = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit() or int(entry.name) == os.getpid():
                continue
            try:
                env = b"\0" + (entry / "environ").read_bytes()
                zombie = (entry / "stat").read_text().split()[2] == "Z"
            except (OSError, IndexError):
                continue  # ended meanwhile, or not ours to read
            if not zombie and (daemon in env or (job in env and b"\0SLURM_JOB_ID=" in env)):
                found.append(int(entry.name))
        return found

    def job_processes(self) -> list[int]:
        """processes() less the daemons and slurmctld's helper (slurmscriptd): slurmstepd and the jobs."""
        daemons = {p.pid for p in self.daemons.values()}
        return [pid for pid in self.processes() if pid not in daemons and not _is_scriptd(pid)]

    def stop(self) -> dict[int, str]:
        """Stop slurmd, slurmctld, then munged (SIGTERM, then SIGKILL); what was left and killed (pid: command)."""
        for name in ("slurmd", "slurmctld", "munged"):
            process = self.daemons.get(name)
            if process is not None and process.poll() is None:
                process.terminate()
                try:
                    process.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait(timeout=60)
        left = {pid: _cmdline(pid) for pid in self.processes()}
        for pid in left:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        return left


def _start(cluster: SlurmCluster, binaries: dict[str, str]) -> None:
    """Write the key and slurm.conf in its folder, start munged, slurmctld and slurmd; wait for an idle node."""
    root, conf = cluster.root, cluster.conf
    for sub in ("munge", "state", "spool", "log"):
        (root / sub).mkdir()
    # munged wants its socket folder and every folder above it searchable by all, its key private
    root.chmod(0o755)
    (root / "munge").chmod(0o755)
    key = root / "munge" / "munge.key"
    subprocess.run([binaries["mungekey"], "--create", f"--keyfile={key}"], check=True, capture_output=True)
    conf.write_text(_slurm_conf(root, _node_line(binaries["slurmd"])))
    daemon_env = {**cluster.client_env(), "PATH": _SBIN, MARKER: str(root)}  # slurmstepd inherits it too

    def launch(name: str, *args: str) -> None:
        with (root / "log" / f"{name}.out").open("wb") as log:  # the daemon keeps its own copy
            cluster.daemons[name] = subprocess.Popen(
                [binaries[name], *args], env=daemon_env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )

    munge = root / "munge"
    files = [f"--pid-file={munge}/munged.pid", f"--log-file={munge}/munged.log", f"--seed-file={munge}/munged.seed"]
    launch("munged", "--foreground", f"--socket={munge}/munge.socket", f"--key-file={key}", *files)
    wait_until(lambda: (munge / "munge.socket").exists() or cluster.daemons["munged"].poll() is not None, "munged")
    launch("slurmctld", "-D", "-f", str(conf))
    launch("slurmd", "-D", "-f", str(conf), "-N", NODE)

    def idle() -> bool:
        for name, process in cluster.daemons.items():
            if process.poll() is not None:
                raise RuntimeError(f"{name} exited with code {process.returncode}")
        return cluster.node_state() == "idle"

    wait_until(idle, f"node {NODE} to be idle (sinfo)")


@pytest.fixture(scope="session")
def slurm_cluster() -> Iterator[SlurmCluster]:
    """A one-node SLURM cluster on loopback, for the whole session (see the module's docstring)."""
    binaries = {name: shutil.which(name, path=_SBIN) for name in _BINARIES}
    missing = [name for name, path in binaries.items() if path is None]
    if missing:
        _unavailable(f"{', '.join(missing)} not found (Debian: apt-get install slurm-wlm munge; `make slurm-install`)")
    if os.geteuid() != 0:
        _unavailable("not root: the cluster runs slurmctld and slurmd as root (slurmd starts each job as its user)")
    root = Path(tempfile.mkdtemp(prefix="hpsearch-slurm-"))
    cluster = SlurmCluster(root=root, conf=root / "slurm.conf", env={"SLURM_CONF": str(root / "slurm.conf")})
    try:
        _start(cluster, {name: path for name, path in binaries.items() if path})
    except (subprocess.SubprocessError, OSError, RuntimeError, pytest.fail.Exception) as e:
        logs = "\n".join(f"{p.name}: {_tail(p)}" for p in sorted(root.glob("*/*.log")) + sorted(root.glob("log/*.out")))
        cluster.stop()
        shutil.rmtree(root, ignore_errors=True)
        _unavailable(f"{e}\n{logs}")
    try:
        yield cluster
    finally:
        try:
            cluster.cancel_all()
        finally:
            left = cluster.stop()
            if not left:
                shutil.rmtree(root, ignore_errors=True)
        assert not left, f"processes of the SLURM cluster were still running after it stopped (killed): {left}"


@pytest.fixture
def slurm(slurm_cluster: SlurmCluster) -> Iterator[SlurmCluster]:
    """The session's cluster for one test: whatever the test leaves in the queue is cancelled after it."""
    yield slurm_cluster
    slurm_cluster.cancel_all()
