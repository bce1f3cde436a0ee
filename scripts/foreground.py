"""What `make run` and `make cluster` share: a stack in the foreground until a stop signal.

``run_in_foreground(stack, say)`` runs ``stack.run()`` until it returns or Ctrl-C, SIGTERM
or SIGHUP arrives, then ``stack.stop()`` (a second signal does not interrupt the stop).
Children are spawned in their own sessions (a Ctrl-C reaches only us) and with
``die_with_us()``: the kernel SIGTERMs them when we die, even by SIGKILL.

A server that daemonizes or is started by another tool (RabbitMQ nodes, epmd, PostgreSQL)
is not our child and gets no such signal: ``Watchdog`` is a child that does get it and
stops the processes named by pidfiles, in order. Run as a program, this file is that
watchdog: ``python scripts/foreground.py PIDFILE[:SIGNAL] ...``.
"""

from __future__ import annotations

import argparse
import ctypes
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import IO, Protocol

from tracker_api.ops.broker_reload import command_line
from tracker_api.ops.ports import port_free, port_open

REPO = Path(__file__).resolve().parents[1]
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
STAND_DOWN = signal.SIGUSR1  # to the watchdog: we stopped everything ourselves
WATCHDOG_STOP_TIMEOUT = 30.0


class Shutdown(BaseException):
    """A stop signal arrived; unwinds whatever was running, then everything is stopped."""


class Stack(Protocol):
    def run(self) -> int: ...

    def stop(self) -> None: ...


def announcer(prefix: str) -> Callable[[str], None]:
    def say(message: str) -> None:
        try:
            print(f"[{prefix}] {message}", flush=True)
        except OSError:  # the terminal is gone (SIGHUP): stopping matters more than saying so
            pass

    return say


def on_signal(signum: int, _frame: FrameType | None) -> None:
    for sig in STOP_SIGNALS:  # a second Ctrl-C must not interrupt the orderly stop
        signal.signal(sig, signal.SIG_IGN)
    raise Shutdown(signal.Signals(signum).name)


def run_in_foreground(
    stack: Stack, say: Callable[[str], None], failures: tuple[type[Exception], ...] = ()
) -> int:
    """``stack.run()`` until it ends or a stop signal; ``stack.stop()`` in every case, so
    ``stop`` must stop only what ``run`` started: a run refused before it started anything
    (``sys.exit`` for a busy port) must not touch the processes or pidfiles of another.

    ``failures``: exceptions that end the run with their message and exit code 1.
    """
    for sig in STOP_SIGNALS:
        signal.signal(sig, on_signal)
    try:
        code = stack.run()
    except Shutdown as stopped:
        say(f"{stopped} received: stopping")
        code = 0
    except failures as error:
        say(str(error))
        code = 1
    finally:
        for sig in STOP_SIGNALS:
            signal.signal(sig, signal.SIG_IGN)
        stack.stop()
    say("stopped")
    return code


def command_line_help(prog: str, doc: str | None, epilog: str) -> None:
    """``--help`` prints ``doc`` and ``epilog`` and exits 0; any other argument is a usage
    error (exit 2). The settings come from the environment, never from arguments."""
    parser = argparse.ArgumentParser(
        prog=prog,
        description=doc,
        epilog=epilog,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.parse_args()


def listening_pids(port: int) -> list[int]:
    """Processes with a socket listening on ``port`` (Linux /proc; empty elsewhere)."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            rows = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            fields = row.split()
            if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:  # LISTEN
                inodes.add(f"socket:[{fields[9]}]")
    pids = []
    for fd_dir in Path("/proc").glob("[0-9]*/fd"):
        try:
            if any(os.readlink(fd) in inodes for fd in fd_dir.iterdir()):
                pids.append(int(fd_dir.parent.name))
        except OSError:  # gone, or another user's
            continue
    return pids


def described(pid: int) -> str:
    return f"pid {pid} ({' '.join(command_line(pid) or ['?'])})"


def holder(port: int) -> str:
    """Who holds ``port``, a port a server could not listen on: the processes listening
    there, or why none can be named."""
    listening = ", ".join(described(pid) for pid in listening_pids(port))
    if listening:
        return listening
    if port_open(port):  # another user's server: its sockets are not ours to see
        return f"a process this user cannot see (try: sudo ss -ltnp 'sport = :{port}')"
    # Nobody listens, yet a bind fails: an outgoing connection holds it as its local port
    # (the kernel lends ports of its ephemeral range so).
    return "a connection's local end"


def refuse_busy(port: int, what: str, prefix: str, remedy: str = "stop it") -> None:
    """Exit (code 1) naming who holds ``port`` unless a server could listen on it now."""
    if not port_free(port):
        sys.exit(f"[{prefix}] port {port} ({what}) is already in use by {holder(port)}: {remedy}")


def shown(path: Path) -> Path:
    """``path`` relative to the checkout when it is inside it (shorter in messages)."""
    return path.relative_to(REPO) if path.is_relative_to(REPO) else path


STATE_MARKER = "# Local state of make run / make cluster (VAR_DIR): never committed."


def make_state_dir(path: Path) -> None:
    """Create the state directory (VAR_DIR) with a ``.gitignore`` ignoring all of it: a
    VAR_DIR moved inside the checkout holds passwords and databases, and git must not
    offer them for a commit. The marker also tells `make clean` the directory is ours."""
    path.mkdir(parents=True, exist_ok=True)
    ignore = path / ".gitignore"
    if not ignore.exists():
        ignore.write_text(f"{STATE_MARKER}\n*\n")


def die_with_us() -> Callable[[], None]:
    """What a child runs between fork and exec: the stop signals back to their defaults and
    unblocked (``spawn`` holds them around the fork), and, on Linux, the kernel SIGTERMs
    it when we die, even by SIGKILL.

    The death signal follows the death of the thread that spawned the child: spawn from the
    main thread.
    """
    libc = ctypes.CDLL(None, use_errno=True) if sys.platform.startswith("linux") else None
    parent = os.getpid()
    pr_set_pdeathsig = 1

    def in_child() -> None:
        for sig in STOP_SIGNALS:
            signal.signal(sig, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
        if libc is not None:
            libc.prctl(pr_set_pdeathsig, signal.SIGTERM)
            if os.getppid() != parent:  # we died before prctl took effect
                os.kill(os.getpid(), signal.SIGTERM)

    return in_child


def spawn(
    args: list[str],
    *,
    env: Mapping[str, str] | None = None,
    output: IO[bytes] | None = None,
) -> subprocess.Popen[bytes]:
    """Start a child in its own session (a Ctrl-C reaches only us, and we stop the children
    in order). The stop signals wait while it is forked: one that landed between fork and
    exec would run our handler in the child, a traceback, or leave a child we never
    recorded; held, it arrives once ``Popen`` has returned and the child is ours to stop."""
    held = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    try:
        return subprocess.Popen(
            args,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=output,
            start_new_session=True,
            preexec_fn=die_with_us(),
        )
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, held)


def wait_for(check: Callable[[], bool], process: subprocess.Popen[bytes], timeout: float) -> bool:
    """Whether ``check`` came true before ``process`` exited or ``timeout`` passed."""
    deadline = time.monotonic() + timeout
    while not check():
        if process.poll() is not None or time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def stop_child(child: subprocess.Popen[bytes] | None, pidfile: Path | None = None) -> None:
    """Stop ``child`` if we started one, then remove its ``pidfile``. Without a child the
    pidfile is left alone: it may name another run's process."""
    if child is None:
        return
    if child.poll() is None:
        child.terminate()
    try:
        child.wait(10)
    except subprocess.TimeoutExpired:
        child.kill()
        child.wait()
    if pidfile is not None:
        pidfile.unlink(missing_ok=True)


# --- supervision --------------------------------------------------------------------------


FIRST_RESTART_DELAY, MAX_RESTART_DELAY = 1.0, 30.0
STABLE_AFTER = 30.0  # up this long, a process is healthy again: its next restart is quick
NUDGE_EVERY = 5.0  # seconds between ``Supervised.nudge`` calls while it boots


def ended(returncode: int) -> str:
    """How a process ended, for a person: ``was killed by SIGKILL``, ``exited with code 1``."""
    if returncode < 0:
        return f"was killed by {signal.Signals(-returncode).name}"
    return f"exited with code {returncode}"


@dataclass
class Supervised:
    """A process kept running: when it ends it is reported in one line and started again
    after a delay that doubles per restart (1 s, 2 s, 4 s … 30 s) and falls back to 1 s
    once it has stayed up for ``STABLE_AFTER`` seconds.

    ``start`` starts it (again) and returns the process; ``ready`` says it serves again
    after a restart; ``meanwhile`` what the rest does while it is down; ``back`` the line
    once it serves again, given its pid; ``nudge`` (optional) is called every
    ``NUDGE_EVERY`` seconds while it boots.
    """

    name: str
    process: subprocess.Popen[bytes]
    start: Callable[[], subprocess.Popen[bytes]]
    ready: Callable[[], bool]
    meanwhile: str
    back: Callable[[int], str]
    nudge: Callable[[], None] | None = None
    delay: float = FIRST_RESTART_DELAY
    up_since: float = field(default_factory=time.monotonic)
    restart_at: float | None = None  # down: when it is started again
    booting_since: float | None = None  # started again, not serving yet
    nudged_at: float = 0.0


class Supervisor:
    """Keeps ``Supervised`` processes running; ``tick`` once in a while from the main
    thread (``spawn`` must be called from there). Never blocks for long: the others are
    looked after while one boots."""

    def __init__(self, say: Callable[[str], None], items: Sequence[Supervised]) -> None:
        self.say = say
        self.items = list(items)

    def tick(self, now: float | None = None) -> None:
        for item in self.items:
            self.check(item, time.monotonic() if now is None else now)

    def check(self, item: Supervised, now: float) -> None:
        if item.restart_at is not None:
            if now >= item.restart_at:
                self.restart(item, now)
            return
        returncode = item.process.poll()
        if returncode is not None:
            self.schedule(item, now, f"{item.name} {ended(returncode)}")
        elif item.booting_since is not None:
            self.boot(item, now)
        elif now - item.up_since > STABLE_AFTER:
            item.delay = FIRST_RESTART_DELAY

    def schedule(self, item: Supervised, now: float, what: str) -> None:
        self.say(f"{what}; restarting it in {item.delay:g} s ({item.meanwhile})")
        item.restart_at = now + item.delay
        item.delay = min(item.delay * 2, MAX_RESTART_DELAY)
        item.booting_since = None

    def restart(self, item: Supervised, now: float) -> None:
        item.restart_at = None
        try:
            item.process = item.start()
        except Exception as error:  # a port still taken, a tool gone: try again later
            self.schedule(item, now, f"{item.name} could not be started: {error}")
            return
        item.booting_since = item.nudged_at = now

    def boot(self, item: Supervised, now: float) -> None:
        if item.ready():
            self.say(item.back(item.process.pid))
            item.booting_since = None
            item.up_since = now
        elif item.nudge is not None and now - item.nudged_at >= NUDGE_EVERY:
            item.nudged_at = now
            item.nudge()


# --- the watchdog -----------------------------------------------------------------------


class Watchdog:
    """A child that stops what the pidfiles name if we die without stopping it ourselves.

    ``pidfiles``: ``(path, signal)`` in stop order; a pidfile's first line is the pid. A
    pidfile that is gone by then names nothing to stop (its owner was stopped cleanly).
    """

    def __init__(self, pidfiles: Sequence[tuple[Path, signal.Signals]]) -> None:
        args = [f"{path}:{sig.name}" for path, sig in pidfiles]
        self.process = spawn([sys.executable, __file__, *args])

    def stand_down(self) -> None:
        """We stopped everything: the watchdog leaves without touching anything."""
        if self.process.poll() is None:
            self.process.send_signal(STAND_DOWN)
        try:
            self.process.wait(5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def pid_in(pidfile: Path) -> int | None:
    try:
        return int(pidfile.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def stop_pid(pid: int, sig: signal.Signals, timeout: float) -> None:
    """``sig``, then SIGKILL after ``timeout``: one process that is not our child."""
    for each, wait in ((sig, timeout), (signal.SIGKILL, 5.0)):
        try:
            os.kill(pid, each)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + wait
        while alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        if not alive(pid):
            return


def watch(specs: list[str]) -> int:
    """The watchdog's body: wait for SIGTERM (our parent died) or STAND_DOWN."""
    pidfiles = []
    for spec in specs:
        path, _, name = spec.rpartition(":")
        pidfiles.append((Path(path), signal.Signals[name]))
    wanted = {signal.SIGTERM, STAND_DOWN}
    signal.pthread_sigmask(signal.SIG_BLOCK, wanted | {signal.SIGINT, signal.SIGHUP})
    if signal.sigwait(wanted) == STAND_DOWN:
        return 0
    for path, sig in pidfiles:
        pid = pid_in(path)
        if pid is not None and alive(pid):
            stop_pid(pid, sig, WATCHDOG_STOP_TIMEOUT)
    return 0


if __name__ == "__main__":
    sys.exit(watch(sys.argv[1:]))
