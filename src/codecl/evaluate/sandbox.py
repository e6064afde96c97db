"""Running untrusted generated code: one process per program, limited, isolated, cleaned up after.

Each program runs under a supervisor, this file run as a script by a fresh interpreter. The
supervisor is single-threaded, so it can safely do the set-up that must happen between fork and
exec (namespaces, mounts, rlimits, setuid, seccomp); `run_many`'s threads only start supervisors.
It forks the program, waits for it with a wall-clock timeout, then kills and reaps everything the
program started: it is a child subreaper, so even processes that left the program's group return to it.

What a program gets when codecl runs as root, as here:
- a fresh temporary directory as its cwd and HOME, removed afterwards, and an environment of PATH,
  HOME and LANG only (NODE_OPTIONS too for node, to cap its heap);
- a uid and gid of its own, drawn per run from UID_RANGE, with no supplementary groups and
  no_new_privs: it can change nothing it did not create, and `kill(-1)` as that uid ends every
  process it started, wherever it went;
- a new network namespace, whose only interface is a loopback that is down, so even 127.0.0.1 is
  unreachable;
- rlimits on CPU seconds, address space, processes (RLIMIT_NPROC, which root itself would ignore),
  file size and core dumps; stdout and stderr go to files outside its reach and are cut to
  OUTPUT_LIMIT_BYTES.
Directories it must pass through but may not enter (a Python under /root, mode 0700) are covered
with a tmpfs in a private mount namespace that shows only the entries it needs (`_expose_only`).

Where the kernel or the user permits less, it degrades, and `sandbox_isolation()` (also readable as
`SANDBOX_ISOLATION`) says which guard is in force, found once per process by trying the strongest first:
- network: a new network namespace (root), else a new user and network namespace (unprivileged
  users, where the kernel allows them), else a seccomp filter that refuses every socket but
  Unix-domain ones and io_uring (weaker: Unix sockets of local daemons stay reachable), else none;
- user: a per-run uid (root), else root itself when that uid cannot be used (nothing protects
  root's files and RLIMIT_NPROC is ignored), else the invoking user (not root): the program can
  change that user's files, and the process limit counts that user's processes too.
"""

from __future__ import annotations

import ctypes
import errno
import os
import resource
import select
import signal
import stat
import sys
import threading
import time
from dataclasses import dataclass

OUTPUT_LIMIT_BYTES = 4096  # of stdout and of stderr; the head and the tail are kept
MAX_PROCESSES = 64  # RLIMIT_NPROC counts threads, and node starts about a dozen of them
MAX_FILE_BYTES = 16 * 1024 * 1024  # RLIMIT_FSIZE, stdout and stderr included
# V8 reserves address space beyond its heap (code range, pointer cage): node fails to start under
# an RLIMIT_AS of 512 MiB. Its heap is capped at memory_mb with --max-old-space-size instead.
# WebAssembly memories reserve about 10 GiB each and do not fit; HumanEval does not use them.
NODE_EXTRA_ADDRESS_SPACE_MB = 1024
# Per-run uids and gids: below systemd's dynamic users (61184-65519) and inside the 16-bit range
# that containers map; ids that /etc/passwd or /etc/group name are skipped.
UID_RANGE = range(60000, 61184)
MINIMAL_PATH = "/usr/local/bin:/usr/bin:/bin"
# Where a program may leave files outside its directory; what its uid left there is removed after it.
WORLD_WRITABLE_DIRS = ("/tmp", "/var/tmp", "/dev/shm")
# The supervisor enforces the timeout; the parent waits this much longer before killing it.
SUPERVISOR_GRACE_S = 10.0
CLEANUP_DEADLINE_S = 5.0

NETWORK_GUARDS = {
    "netns": "new network namespace (no interface up)",
    "userns": "new user and network namespace (no interface up)",
    "seccomp": "seccomp filter refusing all but Unix-domain sockets (weaker: no namespace)",
    "none": "NONE: the program can reach the network",
}
USER_GUARDS = {
    "uid": "a per-run unprivileged uid/gid, no_new_privs",
    "root": "NONE: runs as root (files unprotected, process limit ignored)",
    "invoking-user": "the invoking user (can change that user's files)",
}

# Linux constants: <sched.h>, <sys/mount.h>, <linux/prctl.h>, <linux/seccomp.h>, <linux/filter.h>.
CLONE_NEWNS, CLONE_NEWUSER, CLONE_NEWNET = 0x00020000, 0x10000000, 0x40000000
MS_NOSUID, MS_NODEV, MS_BIND, MS_REC, MS_PRIVATE = 2, 4, 4096, 16384, 1 << 18
PR_SET_SECCOMP, PR_SET_NO_NEW_PRIVS, PR_SET_CHILD_SUBREAPER = 22, 38, 36
SECCOMP_MODE_FILTER = 2
SECCOMP_RET_KILL_PROCESS, SECCOMP_RET_ERRNO, SECCOMP_RET_ALLOW = 0x80000000, 0x00050000, 0x7FFF0000
BPF_LD_W_ABS, BPF_JEQ_K, BPF_JGE_K, BPF_RET_K = 0x20, 0x15, 0x35, 0x06
# machine -> (AUDIT_ARCH_*, __NR_socket, __NR_io_uring_setup); little-endian machines only.
SECCOMP_ARCHES = {"x86_64": (0xC000003E, 41, 425), "aarch64": (0xC00000B7, 198, 425)}
X32_SYSCALL_BIT = 0x40000000


@dataclass(frozen=True)
class SandboxResult:
    status: str  # "passed" (exit 0) | "failed" | "timeout" (wall clock or CPU limit) | "error" (not started)
    returncode: int | None  # negative: killed by that signal; None when it did not run or the result was lost
    stdout: str  # cut to OUTPUT_LIMIT_BYTES
    stderr: str


@dataclass(frozen=True)
class Isolation:
    network: str  # a key of NETWORK_GUARDS
    user: str  # a key of USER_GUARDS

    def __str__(self) -> str:
        return f"network: {NETWORK_GUARDS[self.network]}; user: {USER_GUARDS[self.user]}"


def run_untrusted(command: list[str], files: dict[str, str], *, timeout_s: float = 10.0,
                  memory_mb: int = 1024) -> SandboxResult:
    """Run ``command`` in a fresh directory holding ``files`` (relative path -> text), isolated.

    ``command[0]`` is looked up on this process's PATH, so `["node", "program.js"]` works. The
    program is killed after ``timeout_s`` seconds of wall clock (about as many of CPU time), and
    its address space is capped at ``memory_mb`` MiB (node: heap capped, see NODE_EXTRA_ADDRESS_SPACE_MB).
    """
    return _execute(command, files, sandbox_isolation(), timeout_s, memory_mb)


def run_many(jobs: list[tuple[list[str], dict[str, str]]], *, workers: int | None = None,
             timeout_s: float = 10.0, memory_mb: int = 1024) -> list[SandboxResult]:
    """`run_untrusted` for every (command, files) job, ``workers`` at a time (default: one per CPU), in order."""
    from concurrent.futures import ThreadPoolExecutor

    isolation = sandbox_isolation()  # probed once here, not raced for by the threads
    with ThreadPoolExecutor(max_workers=workers or os.cpu_count() or 1) as pool:
        return list(pool.map(lambda job: _execute(job[0], job[1], isolation, timeout_s, memory_mb), jobs))


def sandbox_isolation() -> Isolation:
    """The strongest isolation this machine permits, found by running a trivial program (cached)."""
    global _isolation
    with _isolation_lock:
        if _isolation is None:
            _isolation = _probe_isolation()
    return _isolation


_isolation: Isolation | None = None
_isolation_lock = threading.Lock()


def __getattr__(name: str):
    if name == "SANDBOX_ISOLATION":  # computed on first use: the probe starts processes
        return str(sandbox_isolation())
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _probe_isolation() -> Isolation:
    root = os.geteuid() == 0
    users = ("uid", "root") if root else ("invoking-user",)
    networks = ("netns", "seccomp", "none") if root else ("userns", "seccomp", "none")
    failures = []
    for user in users:
        for network in networks:
            isolation = Isolation(network, user)
            result = _execute([sys.executable, "-I", "-S", "-c", "pass"], {}, isolation, 10.0, 1024)
            if result.status == "passed":
                return isolation
            failures.append(f"{network}/{user}: {result.stderr.strip()}")
    raise RuntimeError("no sandbox configuration could run a trivial program:\n" + "\n".join(failures))


# ---------------------------------------------------------------------------------------------
# The parent: prepares the directories, starts the supervisor, collects its report.


def _execute(command: list[str], files: dict[str, str], isolation: Isolation, timeout_s: float,
             memory_mb: int) -> SandboxResult:
    import shutil
    import subprocess
    import tempfile

    if not command:
        raise ValueError("an empty command")
    executable = command[0] if os.sep in command[0] else shutil.which(command[0])
    if executable is None:
        return SandboxResult("error", None, "", f"{command[0]}: command not found on PATH")
    uid = _allocate_uid() if isolation.user == "uid" else None
    private_dir = tempfile.mkdtemp(prefix="codecl-sandbox-")  # 0700: out of the program's reach
    program_dir = tempfile.mkdtemp(prefix="codecl-program-")
    try:
        _write_files(program_dir, files, uid)
        environment = {"PATH": MINIMAL_PATH, "HOME": program_dir, "LANG": "C.UTF-8"}
        address_space_mb = memory_mb
        if os.path.basename(os.path.realpath(executable)).startswith("node"):
            environment["NODE_OPTIONS"] = f"--max-old-space-size={memory_mb}"
            address_space_mb += NODE_EXTRA_ADDRESS_SPACE_MB
        report_path = os.path.join(private_dir, "report")
        settings = {
            "directory": program_dir, "report": report_path, "timeout": timeout_s,
            "cpu": max(1, int(timeout_s + 0.999)), "memory": address_space_mb * 1024 * 1024,
            "network": isolation.network, "uid": -1 if uid is None else uid,
        }
        exposed = _paths_to_expose([executable, program_dir]) if uid is not None else []
        argv = [sys.executable, "-I", "-S", os.path.abspath(__file__), "--supervise",
                *(f"{key}={value}" for key, value in settings.items()),
                *(f"expose={path}" for path in exposed),
                *(f"env={name}={value}" for name, value in environment.items()),
                "--", executable, *command[1:]]
        stdout_path, stderr_path = os.path.join(private_dir, "stdout"), os.path.join(private_dir, "stderr")
        with open(stdout_path, "wb") as stdout, open(stderr_path, "wb") as stderr:
            supervisor = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=stdout, stderr=stderr,
                                          env={}, start_new_session=True)
        # Not Popen.wait(timeout): it polls with sleeps of up to 50 ms, the better part of a short run.
        if not _wait_for(supervisor.pid, time.monotonic() + timeout_s + SUPERVISOR_GRACE_S):
            # The supervisor itself hung: end it and what it ran.
            os.killpg(supervisor.pid, signal.SIGKILL)
            if uid is not None:
                subprocess.run([sys.executable, "-I", "-S", os.path.abspath(__file__), "--kill-uid", str(uid)])
        supervisor.wait()
        report = _read_report(report_path)
        stderr_text = _read_cut(stderr_path)
        if "message" in report:
            stderr_text = (stderr_text + "\n" if stderr_text else "") + f"sandbox: {report['message']}"
        if "status" not in report:
            stderr_text += f"\nsandbox: the supervisor ended without a report (exit {supervisor.returncode})"
        returncode = int(report["returncode"]) if report.get("returncode", "") != "" else None
        return SandboxResult(report.get("status", "error"), returncode, _read_cut(stdout_path), stderr_text)
    finally:
        _remove_tree(program_dir)
        _remove_tree(private_dir)
        if uid is not None:
            _release_uid(uid)


_uids_in_use: dict[int, object] = {}  # uid -> the socket that reserves it
_uids_lock = threading.Lock()


def _allocate_uid() -> int:
    """A free uid of UID_RANGE, reserved for this run across every codecl process on the machine.

    The reservation is an abstract Unix socket named after the uid: the kernel lets one process bind
    a name, and frees it when that process closes it or dies. Programs run in another network
    namespace, where these names are not visible, so they cannot take one. The draw comes from the OS,
    not from `random`, which training seeds.
    """
    import grp
    import pwd
    import random
    import socket

    with _uids_lock:
        start = random.SystemRandom().randrange(len(UID_RANGE))
        for uid in (UID_RANGE[(start + i) % len(UID_RANGE)] for i in range(len(UID_RANGE))):
            if uid in _uids_in_use:
                continue
            try:
                pwd.getpwuid(uid)
                continue
            except KeyError:
                pass
            try:
                grp.getgrgid(uid)
                continue
            except KeyError:
                pass
            reservation = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                reservation.bind(f"\0codecl-sandbox-uid-{uid}")
            except OSError:  # another codecl process holds it
                reservation.close()
                continue
            _uids_in_use[uid] = reservation
            return uid
    raise RuntimeError(f"every sandbox uid in {UID_RANGE} is taken")


def _release_uid(uid: int) -> None:
    """Remove what the run's uid left in the world-writable folders, then free the uid."""
    for directory in WORLD_WRITABLE_DIRS:
        try:
            entries = list(os.scandir(directory))
        except OSError:
            continue
        for entry in entries:
            try:
                if entry.stat(follow_symlinks=False).st_uid != uid:
                    continue
                if entry.is_dir(follow_symlinks=False):
                    _remove_tree(entry.path)
                else:
                    os.unlink(entry.path)
            except OSError:
                pass
    with _uids_lock:
        _uids_in_use.pop(uid).close()


def _write_files(directory: str, files: dict[str, str], uid: int | None) -> None:
    for name, text in files.items():
        if os.path.isabs(name) or ".." in name.split("/") or not name.strip("/"):
            raise ValueError(f"sandbox file name {name!r}: must be a relative path inside the directory")
        path = os.path.join(directory, name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w", encoding="utf-8") as file:
            file.write(text)
    if uid is not None:
        for parent, directories, names in os.walk(directory):
            for entry in [parent] + [os.path.join(parent, n) for n in directories + names]:
                os.chown(entry, uid, uid)


def _paths_to_expose(paths: list[str]) -> list[str]:
    """Every path right below a directory that others may not traverse, on the way to ``paths``.

    An executable and its installation prefix (the parent of its bin/) are followed both as named
    and with symlinks resolved: a venv's python links into the base interpreter.
    """
    wanted = set()
    for path in paths:
        absolute = os.path.abspath(path)
        for candidate in (absolute, os.path.realpath(absolute)):
            wanted.update({os.path.realpath(candidate), os.path.realpath(os.path.dirname(os.path.dirname(candidate)))})
    exposed = set()
    for path in wanted:
        parts = path.strip("/").split("/")
        for depth in range(len(parts)):
            directory = "/" + "/".join(parts[:depth])
            try:
                searchable = os.stat(directory).st_mode & stat.S_IXOTH
            except OSError:
                break
            if not searchable:
                exposed.add("/" + "/".join(parts[:depth + 1]))
    return sorted(exposed, key=lambda p: (p.count("/"), p))


def _read_report(path: str) -> dict[str, str]:
    try:
        with open(path, encoding="utf-8") as file:
            return dict(line.rstrip("\n").partition("=")[::2] for line in file if "=" in line)
    except FileNotFoundError:
        return {}


def _read_cut(path: str) -> str:
    """The file's text; past OUTPUT_LIMIT_BYTES, its head and tail around a note of what was cut."""
    half = OUTPUT_LIMIT_BYTES // 2
    with open(path, "rb") as file:
        size = os.fstat(file.fileno()).st_size
        if size <= OUTPUT_LIMIT_BYTES:
            data = file.read()
        else:
            head = file.read(half)
            file.seek(size - half)
            data = head + f"\n[... {size - 2 * half} bytes cut ...]\n".encode() + file.read()
    return data.decode("utf-8", errors="replace")


def _remove_tree(path: str) -> None:
    import shutil

    def make_writable_and_retry(function, failed_path, _):  # a program may chmod its own files 000
        os.chmod(os.path.dirname(failed_path), 0o700)
        if os.path.isdir(failed_path) and not os.path.islink(failed_path):
            os.chmod(failed_path, 0o700)
        function(failed_path)

    shutil.rmtree(path, onerror=make_writable_and_retry)


# ---------------------------------------------------------------------------------------------
# The supervisor: a separate, single-threaded process. Standard library only: it runs as
# `python -I -S sandbox.py`, without site-packages.


def _supervise(argv: list[str]) -> int:
    split = argv.index("--")
    settings, exposed, environment = {}, [], {}
    for item in argv[:split]:
        key, _, value = item.partition("=")
        if key == "expose":
            exposed.append(value)
        elif key == "env":
            name, _, value = value.partition("=")
            environment[name] = value
        else:
            settings[key] = value
    command = argv[split + 1:]
    uid = int(settings["uid"])
    uid = None if uid < 0 else uid
    _libc().prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)  # orphans of the program come back here
    report = {}

    error_read, error_write = os.pipe()  # close-on-exec: empty at exec, else the set-up's error
    started = time.monotonic()
    pid = os.fork()
    if pid == 0:
        # Whatever happens, this process must never return into the supervisor's code.
        os.close(error_read)
        try:
            _enter_sandbox(settings, exposed, uid)
        except BaseException as error:
            os.write(error_write, f"set-up failed: {error}".encode(errors="replace"))
        else:
            try:
                os.execve(command[0], command, environment)
            except BaseException as error:
                os.write(error_write, f"cannot run {command[0]}: {error}".encode(errors="replace"))
        os._exit(127)
    os.close(error_write)
    with os.fdopen(error_read, "rb") as errors:
        setup_error = errors.read().decode(errors="replace")

    timed_out = not _wait_for(pid, started + float(settings["timeout"]))
    if timed_out:
        _kill_group(pid)
    _, wait_status, usage = os.wait4(pid, 0)
    returncode = os.waitstatus_to_exitcode(wait_status)
    # SIGXCPU comes from the soft CPU limit; the kernel's accounting may read a hair under it then.
    cpu_exceeded = returncode == -signal.SIGXCPU or (
        returncode == -signal.SIGKILL and usage.ru_utime + usage.ru_stime >= int(settings["cpu"]))
    if setup_error:
        report.update(status="error", returncode="", message=setup_error.replace("\n", " "))
    elif timed_out or cpu_exceeded:
        report.update(status="timeout", returncode=returncode)
    else:
        report.update(status="passed" if returncode == 0 else "failed", returncode=returncode)
    if not _reap_descendants(pid, uid):
        report["message"] = (report.get("message", "") + " processes left behind could not be killed").strip()
    with open(settings["report"], "w", encoding="utf-8") as file:
        file.writelines(f"{key}={value}\n" for key, value in report.items())
    return 0


def _enter_sandbox(settings: dict[str, str], exposed: list[str], uid: int | None) -> None:
    """In the forked child, before exec: isolate, limit, drop privileges."""
    libc = _libc()
    os.setsid()  # its own process group, killed as one
    # The process limit is per real uid: a per-run uid starts at zero, the invoking user does not.
    # Counted before a user namespace, inside which every other uid reads as the overflow uid.
    processes = MAX_PROCESSES + (0 if uid is not None else _count_user_threads(os.getuid()))
    network = settings["network"]
    namespaces = {"netns": CLONE_NEWNET, "userns": CLONE_NEWUSER | CLONE_NEWNET}.get(network, 0)
    namespaces |= CLONE_NEWNS if exposed else 0
    if namespaces:
        _check(libc.unshare(namespaces), "unshare")
    if exposed:
        _expose_only(exposed)
    cpu_s, memory = int(settings["cpu"]), int(settings["memory"])
    # SIGXCPU at the soft limit, SIGKILL a second later.
    resource.setrlimit(resource.RLIMIT_CPU, (cpu_s, cpu_s + 1))
    resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
    resource.setrlimit(resource.RLIMIT_FSIZE, (MAX_FILE_BYTES, MAX_FILE_BYTES))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    resource.setrlimit(resource.RLIMIT_NPROC, (processes, processes))
    if uid is not None:
        os.setgroups([])
        os.setgid(uid)
        os.setuid(uid)
    os.chdir(settings["directory"])
    _check(libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "no_new_privs")  # setuid binaries stay unprivileged
    if network == "seccomp":
        _install_socket_filter()


def _expose_only(exposed: list[str]) -> None:
    """In a private mount namespace, cover each untraversable parent of ``exposed`` with a tmpfs
    that holds only the exposed entries, bind-mounted from the originals (reached through an
    O_PATH descriptor opened before the cover). Parents are covered outermost first."""
    libc = _libc()
    _check(libc.mount(None, b"/", None, MS_REC | MS_PRIVATE, None), "mount --make-rprivate /")
    parents = {}
    for path in exposed:  # ordered by depth
        parents.setdefault(os.path.dirname(path), []).append(path)
    for parent, paths in parents.items():
        handles = [(path, os.open(path, os.O_PATH)) for path in paths]
        _check(libc.mount(b"tmpfs", parent.encode(), b"tmpfs", MS_NOSUID | MS_NODEV, b"mode=0755,size=64k"),
               f"mount tmpfs on {parent}")
        for path, handle in handles:
            if stat.S_ISDIR(os.fstat(handle).st_mode):
                os.mkdir(path)
            else:
                open(path, "x").close()
            _check(libc.mount(f"/proc/self/fd/{handle}".encode(), path.encode(), None, MS_BIND | MS_REC, None),
                   f"bind {path}")
            os.close(handle)


def _install_socket_filter() -> None:
    """The fallback network guard: a seccomp filter on socket(2), for when no namespace is allowed."""
    machine = os.uname().machine
    if machine not in SECCOMP_ARCHES:
        raise OSError(f"no seccomp socket filter for {machine}")
    arch, socket_call, io_uring_setup_call = SECCOMP_ARCHES[machine]
    program = [
        (BPF_LD_W_ABS, 0, 0, 4),  # seccomp_data.arch
        (BPF_JEQ_K, 1, 0, arch),
        (BPF_RET_K, 0, 0, SECCOMP_RET_KILL_PROCESS),  # another ABI (int 0x80) would dodge the checks
        (BPF_LD_W_ABS, 0, 0, 0),  # seccomp_data.nr
        (BPF_JGE_K, 0, 1, X32_SYSCALL_BIT),
        (BPF_RET_K, 0, 0, SECCOMP_RET_KILL_PROCESS),
        (BPF_JEQ_K, 0, 1, io_uring_setup_call),  # io_uring opens sockets without socket(2)
        (BPF_RET_K, 0, 0, SECCOMP_RET_ERRNO | errno.ENOSYS),
        (BPF_JEQ_K, 1, 0, socket_call),
        (BPF_RET_K, 0, 0, SECCOMP_RET_ALLOW),
        (BPF_LD_W_ABS, 0, 0, 16),  # args[0], the address family (low half, little-endian)
        (BPF_JEQ_K, 0, 1, 1),  # AF_UNIX
        (BPF_RET_K, 0, 0, SECCOMP_RET_ALLOW),
        (BPF_RET_K, 0, 0, SECCOMP_RET_ERRNO | errno.EACCES),
    ]

    class SockFilter(ctypes.Structure):
        _fields_ = [("code", ctypes.c_ushort), ("jt", ctypes.c_ubyte), ("jf", ctypes.c_ubyte), ("k", ctypes.c_uint)]

    class SockFprog(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.POINTER(SockFilter))]

    instructions = (SockFilter * len(program))(*(SockFilter(*row) for row in program))
    fprog = SockFprog(len(program), instructions)
    _check(_libc().prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.addressof(fprog), 0, 0), "seccomp")


def _wait_for(pid: int, deadline: float) -> bool:
    """Whether ``pid`` exited before ``deadline`` (time.monotonic); it is left to be reaped."""
    try:
        handle = os.pidfd_open(pid)
    except (AttributeError, OSError):  # before Linux 5.3 / Python 3.9: poll
        while time.monotonic() < deadline:
            if os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None:
                return True
            time.sleep(0.002)
        return False
    try:
        poller = select.poll()
        poller.register(handle, select.POLLIN)
        while True:
            remaining_ms = (deadline - time.monotonic()) * 1000
            if remaining_ms <= 0:
                return False
            if poller.poll(remaining_ms):
                return True
    finally:
        os.close(handle)


def _reap_descendants(pid: int, uid: int | None) -> bool:
    """Kill and reap every process the program left; False if some survived CLEANUP_DEADLINE_S."""
    deadline = time.monotonic() + CLEANUP_DEADLINE_S
    while True:
        while True:
            try:
                reaped, _ = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return True
            if reaped == 0:
                break
        if time.monotonic() > deadline:
            return False
        _kill_group(pid)
        if uid is not None:
            _kill_uid(uid)  # all at once, wherever they went
        else:
            _kill_children()  # those that left the group come back here as orphans, one level a round
        time.sleep(0.001)


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _kill_uid(uid: int) -> None:
    """kill(-1) as ``uid``: the kernel signals every process of that uid at once, so none can fork away."""
    pid = os.fork()
    if pid == 0:
        try:
            os.setuid(uid)
            os.kill(-1, signal.SIGKILL)
        except OSError:
            pass
        os._exit(0)
    os.waitpid(pid, 0)


def _kill_children() -> None:
    me = os.getpid()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat", "rb") as file:
                    parent = int(file.read().rpartition(b")")[2].split()[1])
                if parent == me:
                    os.kill(int(entry), signal.SIGKILL)
            except (OSError, ValueError, IndexError):
                pass


def _count_user_threads(uid: int) -> int:
    """Threads of ``uid`` on this machine: RLIMIT_NPROC is checked against this count."""
    count = 0
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/status", encoding="ascii", errors="replace") as file:
                    fields = dict(line.partition(":")[::2] for line in file)
                if int(fields["Uid"].split()[0]) == uid:
                    count += int(fields["Threads"])
            except (OSError, KeyError, ValueError):
                pass
    return count


def _libc() -> ctypes.CDLL:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
    libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p]
    return libc


def _check(result: int, what: str) -> None:
    if result != 0:
        number = ctypes.get_errno()
        raise OSError(number, f"{what}: {os.strerror(number)}")


if __name__ == "__main__":
    if sys.argv[1] == "--supervise":
        sys.exit(_supervise(sys.argv[2:]))
    if sys.argv[1] == "--kill-uid":
        _kill_uid(int(sys.argv[2]))
