"""Running untrusted generated code: one process per program, limited, isolated, cleaned up after.

Each program runs under a supervisor, this file run as a script by a fresh interpreter. The
supervisor is single-threaded, so it can safely do the set-up that must happen between fork and
exec (namespaces, mounts, rlimits, setuid, seccomp); `run_many`'s threads only start supervisors.
It forks the program, waits for it with a wall-clock timeout, then kills and reaps everything the
program started: it is a child subreaper, so even processes that left the program's group return to it.

What a program gets when codecl runs as root, as here:
- a fresh temporary directory as its cwd and HOME, removed afterwards, and an environment of PATH,
  HOME and LANG only (NODE_OPTIONS too for node, to cap its heap);
- a uid and gid of its own, drawn per run from UID_RANGE and reserved by a file lock that every
  codecl process sharing /run sees, with no supplementary groups and no_new_privs: it can change
  nothing it did not create, and `kill(-1)` as that uid ends every process it started, wherever it went;
- no socket at all: a seccomp filter refuses socket(2) for every family (Unix sockets of local
  daemons, reached by path, are no safer than TCP) and io_uring; and a new network namespace, whose
  only interface is a loopback that is down;
- a private view of the files: every mount read-only except its own directory, empty private tmpfs
  on the world-writable folders (WORLD_WRITABLE_DIRS) and a private IPC namespace, so nothing it
  writes outside its directory outlives it, and there is nothing to clean up after it;
- rlimits on CPU seconds, address space, processes (RLIMIT_NPROC, which root itself would ignore),
  file size and core dumps; stdout and stderr go to files outside its reach and are cut to
  OUTPUT_LIMIT_BYTES.
Directories it must pass through but may not enter (a Python under /root, mode 0700) are covered
with a tmpfs in the private mount namespace that shows only the entries it needs (`_expose_only`).

Where the kernel or the user permits less, it degrades, and `sandbox_isolation()` (also readable as
`SANDBOX_ISOLATION`) says which guard is in force, found once per process by trying the strongest
first; NETWORK_GUARDS, FILE_GUARDS and USER_GUARDS state what each guarantees and what it does not:
- network: the filter and a new network namespace (root), else the filter and a new user and network
  namespace (unprivileged users, where the kernel allows them), else a namespace without the filter
  (a CPU it has no table for), else the filter alone, else none;
- files: the private view (needs a mount namespace), else, with a per-run uid, a walk of the
  world-writable folders after the run that removes what the uid made there, else none;
- user: a per-run uid (root), else root itself when that uid cannot be used (nothing protects
  root's files and RLIMIT_NPROC is ignored), else the invoking user (not root): the process limit
  counts that user's processes too, and without the private view it can change that user's files.
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
# One lock file per uid, flock()ed while a run holds it. A file lock, unlike the abstract socket it
# replaces, is seen whatever the network namespace; the kernel drops it when its holder dies.
UID_LOCK_DIR = "/run/codecl-sandbox-uids"
# When every uid is held (by other codecl processes), wait this long for one to be released.
UID_WAIT_S = 60.0
MINIMAL_PATH = "/usr/local/bin:/usr/bin:/bin"
# The folders any user may write to (`find / -xdev -type d -perm -0002` on Debian and Ubuntu):
# each gets a private tmpfs, or, without a mount namespace, is searched for what the uid left.
WORLD_WRITABLE_DIRS = ("/tmp", "/var/tmp", "/dev/shm", "/run/lock")
PRIVATE_TMPFS_OPTIONS = b"mode=1777,size=64m,nr_inodes=16384"  # each one's memory is the machine's
# Without a private view: how deep the walk searches folders the uid did not make, one descriptor a level.
WALK_MAX_DEPTH = 32
# The supervisor enforces the timeout; the parent waits this much longer before killing it.
SUPERVISOR_GRACE_S = 10.0
CLEANUP_DEADLINE_S = 5.0

_SOCKET_FILTER = ("seccomp filter refusing socket(2) for every family and io_uring: no TCP/IP, Unix "
                  "(by path or abstract name), netlink or vsock socket; socketpair(2) is allowed")
NETWORK_GUARDS = {
    "netns+seccomp": f"new network namespace (no interface up) and a {_SOCKET_FILTER}",
    "userns+seccomp": f"new user and network namespace (no interface up) and a {_SOCKET_FILTER}",
    "netns": "new network namespace (no interface up), no seccomp filter for this CPU: "
             "Unix sockets reached by path and vsock stay reachable",
    "userns": "new user and network namespace (no interface up), no seccomp filter for this CPU: "
              "Unix sockets reached by path and vsock stay reachable",
    "seccomp": f"{_SOCKET_FILTER} (no namespace)",
    "none": "NONE: the program can reach the network",
}
FILE_GUARDS = {
    "private": "every mount read-only except its own directory, locked so that it cannot undo it; empty "
               "private tmpfs (64 MiB) on " + ", ".join(WORLD_WRITABLE_DIRS) + " and a private IPC namespace, "
               "all gone when it ends",
    "walk": "what its uid left in " + ", ".join(WORLD_WRITABLE_DIRS) + " is removed: what it made, "
            f"whole; inside others' folders, in those others may enter, {WALK_MAX_DEPTH} levels deep, on "
            "the same filesystem; world-writable files and folders elsewhere are open to it and keep what "
            "it leaves, and its SysV/POSIX IPC objects stay",
    "none": "NONE: what it writes outside its own directory stays",
}
USER_GUARDS = {
    "uid": "a per-run unprivileged uid/gid, no supplementary groups, no_new_privs; reserved through "
           f"{UID_LOCK_DIR}, so codecl processes with another /run (containers) may draw the same uid",
    "root": "NONE: runs as root (files unprotected, process limit ignored, mounts can be undone)",
    "invoking-user": "the invoking user (unless files are private, it can change that user's files; "
                     "the process limit counts that user's processes too)",
}

# Linux constants: <sched.h>, <sys/mount.h>, <linux/mount.h>, <fcntl.h>, <linux/prctl.h>,
# <linux/seccomp.h>, <linux/filter.h>.
CLONE_NEWNS, CLONE_NEWIPC, CLONE_NEWUSER, CLONE_NEWNET = 0x00020000, 0x08000000, 0x10000000, 0x40000000
MS_NOSUID, MS_NODEV, MS_BIND, MS_REC, MS_PRIVATE = 2, 4, 4096, 16384, 1 << 18
MOUNT_ATTR_RDONLY, AT_FDCWD, AT_RECURSIVE = 1, -100, 0x8000
NR_MOUNT_SETATTR = 442  # the same on every architecture: numbers are shared from 424 on (Linux 5.12+)
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
    files: str  # a key of FILE_GUARDS
    user: str  # a key of USER_GUARDS

    def __str__(self) -> str:
        return (f"network: {NETWORK_GUARDS[self.network]}; files: {FILE_GUARDS[self.files]}; "
                f"user: {USER_GUARDS[self.user]}")


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
    from codecl.errors import UserError  # here, not at the top: the supervisor runs this file without codecl

    root = os.geteuid() == 0
    users = ("uid", "root") if root else ("invoking-user",)
    namespace = "netns" if root else "userns"
    networks = (f"{namespace}+seccomp", namespace, "seccomp", "none")
    failures = []
    for user in users:
        # Without a mount namespace, only a per-run uid tells what the program left behind.
        for files in ("private", "walk" if user == "uid" else "none"):
            for network in networks:
                isolation = Isolation(network, files, user)
                try:
                    result = _execute([sys.executable, "-I", "-S", "-c", "pass"], {}, isolation, 10.0, 1024)
                except (OSError, RuntimeError) as error:  # no uid can be reserved here (a read-only /run)
                    failures.append(f"{network}/{files}/{user}: {error}")
                    continue
                if result.status == "passed":
                    return isolation
                failures.append(f"{network}/{files}/{user}: {result.stderr.strip()}")
    first = failures[0].splitlines()[0] if failures else "none tried"
    raise UserError(f"the sandbox cannot run a trivial program on this machine in any configuration (first: {first})")


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
            "network": isolation.network, "files": isolation.files, "uid": -1 if uid is None else uid,
        }
        exposed = _paths_to_expose([executable, program_dir]) if uid is not None else []
        covered = _world_writable_roots() if isolation.files == "private" else []
        # The interpreter may live under a world-writable folder (a venv in /tmp): shown again over its tmpfs.
        kept = [path for path in _installation_paths(executable) if _is_under_any(path, covered)]
        argv = [sys.executable, "-I", "-S", os.path.abspath(__file__), "--supervise",
                *(f"{key}={value}" for key, value in settings.items()),
                *(f"expose={path}" for path in exposed),
                *(f"cover={path}" for path in covered),
                *(f"keep={path}" for path in kept),
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
        try:
            _remove_tree(program_dir)
            _remove_tree(private_dir)
        finally:  # a uid whose clean-up failed is still freed, not held until this process ends
            if uid is not None:
                _release_uid(uid, isolation.files)


_uids_in_use: dict[int, int] = {}  # uid -> the descriptor of its locked file
_uids_lock = threading.Lock()


def _allocate_uid() -> int:
    """A free uid of UID_RANGE, reserved for this run across every codecl process on the machine.

    When every uid is held elsewhere, maybe only for a moment (another run's programs), it waits up
    to UID_WAIT_S for one rather than fail this run.
    """
    deadline = time.monotonic() + UID_WAIT_S
    while (uid := _reserve_free_uid()) is None:
        if time.monotonic() >= deadline:
            raise RuntimeError(f"every sandbox uid in {UID_RANGE} is taken")
        time.sleep(0.05)
    return uid


def _reserve_free_uid() -> int | None:
    """One pass over UID_RANGE from a random start: the first uid no account names and no one holds,
    reserved; None if there is none. The draw comes from the OS, not from `random`, which training seeds."""
    import random

    with _uids_lock:
        start = random.SystemRandom().randrange(len(UID_RANGE))
        for uid in (UID_RANGE[(start + i) % len(UID_RANGE)] for i in range(len(UID_RANGE))):
            if uid in _uids_in_use or _names_an_account(uid):
                continue
            reservation = _reserve_uid(uid)
            if reservation is not None:
                _uids_in_use[uid] = reservation
                return uid
    return None


def _names_an_account(uid: int) -> bool:
    import grp
    import pwd

    for lookup in (pwd.getpwuid, grp.getgrgid):
        try:
            lookup(uid)
            return True
        except KeyError:
            pass
    return False


def _reserve_uid(uid: int) -> int | None:
    """A descriptor holding an exclusive flock on ``uid``'s file in UID_LOCK_DIR; None if another holds it.

    The kernel releases the lock when the descriptor closes, so also when its process dies. The
    file stays: removing it would let a second process lock a new file of the same name.
    """
    import fcntl

    _check_lock_dir()
    handle = os.open(os.path.join(UID_LOCK_DIR, str(uid)), os.O_RDONLY | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW,
                     0o600)
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(handle)
        return None
    return handle


def _check_lock_dir() -> None:
    """UID_LOCK_DIR, created if missing; root's alone, or a program could hold every uid's lock."""
    try:
        os.makedirs(UID_LOCK_DIR, mode=0o700, exist_ok=True)
        status = os.lstat(UID_LOCK_DIR)
    except OSError as error:
        raise RuntimeError(f"cannot reserve sandbox uids in {UID_LOCK_DIR}: {error}") from None
    if not stat.S_ISDIR(status.st_mode) or status.st_uid != 0 or status.st_mode & 0o022:
        raise RuntimeError(f"{UID_LOCK_DIR} must be a directory owned by root and writable by root only")


def _release_uid(uid: int, files: str) -> None:
    """Remove what the run's uid left where others may write (unless its files were private), then free the uid."""
    try:
        if files == "walk":
            _remove_left_files(uid)
    finally:
        with _uids_lock:
            os.close(_uids_in_use.pop(uid))


def _remove_left_files(uid: int) -> None:
    """Remove what ``uid`` left in the world-writable folders, at any depth of what it made.

    A folder the uid made is removed whole. Others are searched when others may enter them (a uid
    without groups reached no other), to WALK_MAX_DEPTH levels, on the root's filesystem, without
    following symlinks, by descriptor (a folder renamed meanwhile cannot lead elsewhere). Folders of
    the other per-run uids are left to their own runs: a program must not slow or break another's walk.
    """
    for root in _world_writable_roots():
        try:
            handle = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError:
            continue
        try:
            _remove_owned_below(handle, uid, os.fstat(handle).st_dev, WALK_MAX_DEPTH)
        finally:
            os.close(handle)


def _remove_owned_below(directory: int, uid: int, device: int, depth: int) -> None:
    try:
        entries = list(os.scandir(directory))
    except OSError:
        return
    for entry in entries:
        try:
            status = entry.stat(follow_symlinks=False)
            if status.st_uid == uid:
                if stat.S_ISDIR(status.st_mode):
                    _remove_tree(f"/proc/self/fd/{directory}/{entry.name}", directory)
                else:
                    os.unlink(entry.name, dir_fd=directory)
            elif (depth > 1 and stat.S_ISDIR(status.st_mode) and status.st_mode & stat.S_IXOTH
                  and status.st_dev == device and status.st_uid not in UID_RANGE):
                below = os.open(entry.name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC,
                                dir_fd=directory)
                try:
                    _remove_owned_below(below, uid, device, depth - 1)
                finally:
                    os.close(below)
        except OSError:  # gone meanwhile, or not ours to enter
            pass


def _world_writable_roots() -> list[str]:
    """WORLD_WRITABLE_DIRS that exist, with symlinks resolved (/var/lock -> /run/lock), each once."""
    roots = dict.fromkeys(os.path.realpath(path) for path in WORLD_WRITABLE_DIRS)
    return [path for path in roots if os.path.isdir(path)]


def _is_under_any(path: str, roots: list[str]) -> bool:
    return any(path == root or path.startswith(root.rstrip("/") + "/") for root in roots)


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


def _installation_paths(path: str) -> set[str]:
    """``path`` and its installation prefix (the parent of its bin/), both as named and with symlinks
    resolved: a venv's python links into the base interpreter."""
    absolute = os.path.abspath(path)
    paths = set()
    for candidate in (absolute, os.path.realpath(absolute)):
        paths.update({os.path.realpath(candidate), os.path.realpath(os.path.dirname(os.path.dirname(candidate)))})
    return paths


def _paths_to_expose(paths: list[str]) -> list[str]:
    """Every path right below a directory that others may not traverse, on the way to ``paths``
    (`_installation_paths` of each)."""
    wanted = set().union(*(_installation_paths(path) for path in paths))
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


def _remove_tree(path: str, through: int | None = None) -> None:
    """Remove ``path``, a tree a program may have made hostile; ``through``: a descriptor the path
    names as /proc/self/fd/N/..., passed on to the commands."""
    import shutil
    import subprocess

    def make_writable_and_retry(function, failed_path, _):  # a program may chmod its own files 000
        os.chmod(os.path.dirname(failed_path), 0o700)
        if os.path.isdir(failed_path) and not os.path.islink(failed_path):
            os.chmod(failed_path, 0o700)
            # Not function(failed_path): it may be os.open, which rmtree calls with flags.
            shutil.rmtree(failed_path, onerror=make_writable_and_retry)
        else:
            function(failed_path)

    try:
        shutil.rmtree(path, onerror=make_writable_and_retry)
    except RecursionError:  # rmtree recurses per level, and a program can nest folders thousands deep
        descriptors = () if through is None else (through,)
        subprocess.run(["chmod", "-R", "u+rwx", "--", path], pass_fds=descriptors, stderr=subprocess.DEVNULL)
        subprocess.run(["rm", "-rf", "--", path], pass_fds=descriptors, check=True)


# ---------------------------------------------------------------------------------------------
# The supervisor: a separate, single-threaded process. Standard library only: it runs as
# `python -I -S sandbox.py`, without site-packages.


def _supervise(argv: list[str]) -> int:
    split = argv.index("--")
    settings, paths, environment = {}, {"expose": [], "cover": [], "keep": []}, {}
    for item in argv[:split]:
        key, _, value = item.partition("=")
        if key in paths:
            paths[key].append(value)
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
            _enter_sandbox(settings, paths, uid)
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


def _enter_sandbox(settings: dict[str, str], paths: dict[str, list[str]], uid: int | None) -> None:
    """In the forked child, before exec: isolate, limit, drop privileges."""
    libc = _libc()
    os.setsid()  # its own process group, killed as one
    # The process limit is per real uid: a per-run uid starts at zero, the invoking user does not.
    # Counted before a user namespace, inside which every other uid reads as the overflow uid.
    processes = MAX_PROCESSES + (0 if uid is not None else _count_user_threads(os.getuid()))
    network, private = settings["network"], settings["files"] == "private"
    namespaces = {"netns": CLONE_NEWNET, "userns": CLONE_NEWUSER | CLONE_NEWNET}.get(network.split("+")[0], 0)
    if private or paths["expose"]:
        namespaces |= CLONE_NEWNS | (CLONE_NEWIPC if private else 0)
    own_ids = os.getuid(), os.getgid()
    if namespaces:
        _check(libc.unshare(namespaces), "unshare")
    if namespaces & CLONE_NEWUSER and private:
        _map_own_ids(*own_ids)
    if namespaces & CLONE_NEWNS:
        # Mounts made here must not propagate back to the machine's namespace.
        _check(libc.mount(None, b"/", None, MS_REC | MS_PRIVATE, None), "mount --make-rprivate /")
        # Opened before anything covers them; a later bind mount needs them from this namespace.
        handles = [(path, os.open(path, os.O_PATH)) for path in [*paths["keep"], settings["directory"]]]
        if paths["expose"]:
            _expose_only(paths["expose"])
        if private:
            _make_private(paths["cover"], handles, settings["directory"])
        for _, handle in handles:
            os.close(handle)
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
    if network.endswith("seccomp"):
        _install_socket_filter()


def _map_own_ids(uid: int, gid: int) -> None:
    """In a new user namespace, keep the ids one had: a tmpfs mounted in it refuses files of unmapped ids.

    Not mapped to 0, so the program, once exec'd, holds no capability in the namespace.
    """
    for name, text in (("setgroups", "deny"), ("uid_map", f"{uid} {uid} 1"), ("gid_map", f"{gid} {gid} 1")):
        with open(f"/proc/self/{name}", "w") as file:
            file.write(text)


def _make_private(covered: list[str], handles: list[tuple[str, int]], directory: str) -> None:
    """Every mount read-only; an empty tmpfs over each of ``covered``; then, bound back from their
    ``handles``, the paths a tmpfs hid and ``directory``, made the one writable place.

    The program cannot undo this: it is unprivileged after exec, and in a user namespace of its own
    the copied mounts come locked (and /proc/self/uid_map read-only). Read-only does not stop
    connect(2) on a Unix socket: the seccomp filter does.
    """
    attributes = _MountAttr(attr_set=MOUNT_ATTR_RDONLY)
    _check(_mount_setattr(b"/", AT_RECURSIVE, attributes), "make every mount read-only")
    libc = _libc()
    for path in covered:
        _check(libc.mount(b"tmpfs", path.encode(), b"tmpfs", MS_NOSUID | MS_NODEV, PRIVATE_TMPFS_OPTIONS),
               f"mount tmpfs on {path}")
    for path, handle in sorted(handles, key=lambda item: item[0].count("/")):
        if path == directory or _is_under_any(path, covered):
            _bind(handle, path)
    _check(_mount_setattr(directory.encode(), 0, _MountAttr(attr_clr=MOUNT_ATTR_RDONLY)), f"make {directory} writable")


class _MountAttr(ctypes.Structure):  # struct mount_attr, <linux/mount.h>
    _fields_ = [("attr_set", ctypes.c_uint64), ("attr_clr", ctypes.c_uint64),
                ("propagation", ctypes.c_uint64), ("userns_fd", ctypes.c_uint64)]


def _mount_setattr(path: bytes, flags: int, attributes: _MountAttr) -> int:
    syscall = _libc().syscall  # glibc before 2.36 has no wrapper
    syscall.argtypes = [ctypes.c_long, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint, ctypes.c_void_p, ctypes.c_size_t]
    return syscall(NR_MOUNT_SETATTR, AT_FDCWD, path, flags, ctypes.addressof(attributes), ctypes.sizeof(attributes))


def _bind(handle: int, path: str) -> None:
    """Bind-mount what ``handle`` (an O_PATH descriptor) opened onto ``path``, made first if a tmpfs hid it."""
    if not os.path.lexists(path):
        os.makedirs(os.path.dirname(path), exist_ok=True)
        if stat.S_ISDIR(os.fstat(handle).st_mode):
            os.mkdir(path)
        else:
            open(path, "x").close()
    _check(_libc().mount(f"/proc/self/fd/{handle}".encode(), path.encode(), None, MS_BIND | MS_REC, None),
           f"bind {path}")


def _expose_only(exposed: list[str]) -> None:
    """Cover each untraversable parent of ``exposed`` with a tmpfs that holds only the exposed
    entries, bind-mounted from the originals (reached through an O_PATH descriptor opened before
    the cover). Parents are covered outermost first."""
    libc = _libc()
    parents = {}
    for path in exposed:  # ordered by depth
        parents.setdefault(os.path.dirname(path), []).append(path)
    for parent, paths in parents.items():
        handles = [(path, os.open(path, os.O_PATH)) for path in paths]
        _check(libc.mount(b"tmpfs", parent.encode(), b"tmpfs", MS_NOSUID | MS_NODEV, b"mode=0755,size=64k"),
               f"mount tmpfs on {parent}")
        for path, handle in handles:
            _bind(handle, path)
            os.close(handle)


def _install_socket_filter() -> None:
    """A seccomp filter that refuses socket(2), whatever the family, and io_uring.

    A network namespace leaves Unix sockets reachable by path (a daemon's, world-connectable) and
    vsock (the hypervisor); without a socket there is nothing to connect. socketpair(2) stays: a
    connected pair reaches nothing outside, and a program's own subprocesses may use one.
    """
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
        (BPF_JEQ_K, 0, 1, socket_call),
        (BPF_RET_K, 0, 0, SECCOMP_RET_ERRNO | errno.EACCES),
        (BPF_RET_K, 0, 0, SECCOMP_RET_ALLOW),
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
