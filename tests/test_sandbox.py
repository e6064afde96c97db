"""The sandbox: hostile programs are contained, scored as failures, and leave the machine unharmed.

Every test checks an effect a broken sandbox would show (a surviving process, a deleted file, an
accepted connection, a leaked variable), not only the status the sandbox reports.
"""

import contextlib
import ctypes
import dataclasses
import errno
import os
import select
import shutil
import socket
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
import uuid

import pytest

from codecl.evaluate import sandbox
from codecl.evaluate.sandbox import (OUTPUT_LIMIT_BYTES, UID_RANGE, WORLD_WRITABLE_DIRS, Isolation, _execute,
                                    run_many, run_untrusted, sandbox_isolation)

PYTHON = [sys.executable, "-I"]
# A containment bound, not a performance target: the timeout plus the supervisor's start, its
# clean-up and a loaded 2-core machine.
SLACK_S = 15.0


def run_python(source: str, name: str = "program.py", isolation: Isolation | None = None, *,
               timeout_s: float = 10.0, memory_mb: int = 1024):
    """Run ``source`` in the sandbox, under this machine's isolation or the given one."""
    files = {name: textwrap.dedent(source)}
    if isolation is None:
        return run_untrusted([*PYTHON, name], files, timeout_s=timeout_s, memory_mb=memory_mb)
    return _execute([*PYTHON, name], files, isolation, timeout_s, memory_mb)


def processes_with(marker: str) -> list[int]:
    """Pids of live processes whose command line contains ``marker``."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as file:
                if marker.encode() in file.read():
                    found.append(int(entry))
        except OSError:  # it ended while we looked
            pass
    return found


def unique_marker() -> str:
    return f"codecl_sandbox_test_{uuid.uuid4().hex}"


def isolation_with(**guards: str) -> Isolation:
    """This machine's isolation with some guards swapped: a fallback tested on a machine that has
    better, or a control run without a guard to show that the guard is what stops a program."""
    isolation = dataclasses.replace(sandbox_isolation(), **guards)
    if isolation.files == "walk" and isolation.user != "uid":
        pytest.skip("the walk finds what a per-run uid left, and there are no per-run uids on this machine")
    return isolation


@pytest.fixture
def visible_directory():
    """A fresh directory, 0755, that every uid can reach and that no private tmpfs of the sandbox
    covers: /run/<new> as root, else under the home directory (a program then runs as this user).

    Not under /tmp, which the sandbox replaces with an empty tmpfs: a file there proves nothing.
    """
    parent = "/run" if os.geteuid() == 0 else os.path.expanduser("~")
    try:
        directory = tempfile.mkdtemp(prefix="codecl-sandbox-test-", dir=parent)
    except OSError as error:
        pytest.skip(f"no directory outside /tmp to write to: {error}")
    os.chmod(directory, 0o755)
    yield directory
    shutil.rmtree(directory, ignore_errors=True)  # a broken sandbox may have removed it


# ----------------------------------------------------------------------------- ordinary programs


def test_exit_zero_passes_and_stdout_is_captured():
    result = run_python("print('hello from the sandbox')")
    assert result.status == "passed"
    assert result.returncode == 0
    assert result.stdout == "hello from the sandbox\n"


def test_nonzero_exit_fails_and_stderr_is_captured():
    result = run_python("import sys; print('went wrong', file=sys.stderr); sys.exit(3)")
    assert result.status == "failed"
    assert result.returncode == 3
    assert "went wrong" in result.stderr


def test_uncaught_exception_fails():
    result = run_python("assert 1 == 2, 'candidate is wrong'")
    assert result.status == "failed" and result.returncode == 1
    assert "AssertionError: candidate is wrong" in result.stderr


def test_huge_output_is_cut_keeping_head_and_tail():
    result = run_python("import sys; sys.stdout.write('HEAD' + 'x' * 1_000_000 + 'TAIL')")
    assert result.status == "passed"
    assert result.stdout.startswith("HEAD") and result.stdout.endswith("TAIL")
    assert "bytes cut" in result.stdout
    assert len(result.stdout.encode()) < OUTPUT_LIMIT_BYTES + 100


def test_missing_command_is_an_error_not_a_failure():
    result = run_untrusted([f"no-such-command-{uuid.uuid4().hex}"], {})
    assert result.status == "error" and result.returncode is None
    assert "not found" in result.stderr


@pytest.mark.parametrize("name", ["/etc/evil.py", "../escaped.py", "a/../../escaped.py", "", "/"])
def test_file_names_outside_the_directory_are_refused(name):
    escaped = os.path.join(tempfile.gettempdir(), "escaped.py")
    existed = os.path.exists(escaped)
    with pytest.raises(ValueError, match="relative path"):
        run_untrusted([*PYTHON, "program.py"], {"program.py": "pass", name: "print('escaped')"})
    assert os.path.exists(escaped) == existed
    assert not os.path.exists("/etc/evil.py")


# ----------------------------------------------------------------------------------- timeouts


def test_busy_loop_times_out_in_bounded_time():
    started = time.monotonic()
    result = run_python("while True:\n    pass\n", timeout_s=1.0)
    elapsed = time.monotonic() - started
    assert result.status == "timeout"
    assert result.returncode is not None and result.returncode < 0  # killed by a signal
    assert elapsed < 1.0 + SLACK_S


def test_sleeping_program_times_out_on_the_wall_clock():
    started = time.monotonic()
    result = run_python("import time; time.sleep(1000)", timeout_s=1.0)
    elapsed = time.monotonic() - started
    assert result.status == "timeout"
    assert elapsed < 1.0 + SLACK_S


def test_program_ignoring_signals_still_times_out():
    source = """
        import signal
        for number in (signal.SIGTERM, signal.SIGINT, signal.SIGXCPU, signal.SIGHUP):
            signal.signal(number, signal.SIG_IGN)
        while True:
            pass
    """
    started = time.monotonic()
    result = run_python(source, timeout_s=1.0)
    assert result.status == "timeout"
    assert time.monotonic() - started < 1.0 + SLACK_S


# ------------------------------------------------------------------------------- processes


def test_background_children_are_killed_when_the_program_exits():
    marker = unique_marker()
    # A child in a new session that sleeps under the marker, and a double-forked daemon that
    # carries the marker in its inherited command line (the program's file name).
    source = f"""
        import os, subprocess, sys, time
        subprocess.Popen([sys.executable, "-c", "import time; time.sleep(1000)", "{marker}"],
                         start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if os.fork() == 0:
            os.setsid()
            if os.fork() == 0:
                time.sleep(1000)
            os._exit(0)
        time.sleep(0.3)  # let both start before the program exits
        print("spawned")
    """
    started = time.monotonic()
    result = run_python(source, name=f"{marker}.py", timeout_s=30.0)
    elapsed = time.monotonic() - started
    assert processes_with(marker) == []
    assert result.status == "passed", result.stderr
    assert result.stdout == "spawned\n"
    assert elapsed < SLACK_S  # it did not wait for the sleepers, nor for the 30 s timeout


def test_fork_bomb_is_contained():
    if sandbox_isolation().user == "root":
        pytest.skip("the sandbox runs programs as root here: RLIMIT_NPROC is ignored, "
                    "a fork bomb would not be contained")
    marker = unique_marker()
    source = """
        import os
        while True:
            try:
                os.fork()
            except OSError:
                pass
    """
    started = time.monotonic()
    result = run_python(source, name=f"{marker}.py", timeout_s=2.0)
    elapsed = time.monotonic() - started
    assert result.status != "passed"
    assert elapsed < 2.0 + SLACK_S
    assert processes_with(marker) == []
    # This process can still start processes, and so can the sandbox.
    assert subprocess.run(["true"]).returncode == 0
    assert run_python("print('after the bomb')").stdout == "after the bomb\n"


@pytest.mark.parametrize("source", [
    "bytearray(8 * 1024 ** 3)",
    "chunks = []\nwhile True:\n    chunks.append(bytearray(16 * 1024 ** 2))\n",
], ids=["one-allocation", "growing-list"])
def test_memory_bomb_fails_with_memory_error(source):
    result = run_python(source, memory_mb=256, timeout_s=10.0)
    assert result.status == "failed", result
    assert "MemoryError" in result.stderr
    assert os.getpid() > 0 and run_python("print('still here')").stdout == "still here\n"


# ---------------------------------------------------------------------------------- files


@pytest.fixture
def outside_file(visible_directory):
    """A file the program can reach and read but whose directory is not its own: <dir, 0755>/<file, 0644>."""
    path = os.path.join(visible_directory, "precious.txt")
    with open(path, "w") as file:
        file.write("do not touch")
    os.chmod(path, 0o644)
    return path


@pytest.mark.parametrize("guard", ["this-machine", "uid-only"])
def test_files_outside_the_sandbox_cannot_be_changed(outside_file, guard):
    """Here two guards refuse: read-only mounts and the per-run uid. "uid-only" takes the mounts away
    (the fallback without a mount namespace), so that the uid alone must refuse."""
    isolation = None if guard == "this-machine" else isolation_with(files="walk")
    if guard == "this-machine" and sandbox_isolation().files != "private" and sandbox_isolation().user != "uid":
        pytest.skip("neither private files nor a per-run uid here: the program may change this user's files")
    directory = os.path.dirname(outside_file)
    source = f"""
        import os, shutil
        target = {outside_file!r}
        print("read:", open(target).read())  # it can see the file: only the guards protect it
        for name, attempt in [
            ("remove", lambda: os.remove(target)),
            ("overwrite", lambda: open(target, "w").write("overwritten")),
            ("create", lambda: open(os.path.join({directory!r}, "new.txt"), "w").write("new")),
            ("chmod", lambda: os.chmod(target, 0o777)),
            ("rmtree", lambda: shutil.rmtree({directory!r})),
        ]:
            try:
                attempt()
                print(name, "succeeded")
            except OSError as error:
                print(name, "refused", type(error).__name__)
    """
    result = run_python(source, isolation=isolation)
    assert "read: do not touch" in result.stdout, result
    assert "succeeded" not in result.stdout, result.stdout
    refusal = "refused PermissionError" if guard == "uid-only" else "refused"
    assert result.stdout.count(refusal) == 5, result.stdout
    assert os.listdir(directory) == ["precious.txt"]
    with open(outside_file) as file:
        assert file.read() == "do not touch"
    assert os.stat(outside_file).st_mode & 0o777 == 0o644


def test_folders_open_to_all_outside_tmp_are_read_only(visible_directory):
    """A folder any user may write to, outside the private tmpfs (here /run/<new>, mode 1777), is
    read-only to the program. The control: without the private view, the program writes there and
    the walk, which searches only WORLD_WRITABLE_DIRS, leaves the file (FILE_GUARDS["walk"] says so)."""
    if sandbox_isolation().files != "private":
        pytest.skip(f"file guard is {sandbox_isolation().files!r}: mounts stay writable")
    os.chmod(visible_directory, 0o1777)
    source = f"""
        import os
        try:
            open(os.path.join({visible_directory!r}, "left.txt"), "w").write("left")
            print("wrote")
        except OSError as error:
            print("refused", error.errno)
        open("mine.txt", "w").write("its own directory stays writable")
        print("wrote its own")
    """
    result = run_python(source)
    assert result.stdout.splitlines() == [f"refused {errno.EROFS}", "wrote its own"], result
    assert os.listdir(visible_directory) == []
    if sandbox_isolation().user == "uid":  # the walk needs a per-run uid
        control = run_python(source, isolation=isolation_with(files="walk"))
        assert control.stdout.splitlines() == ["wrote", "wrote its own"], control
        assert os.listdir(visible_directory) == ["left.txt"]


def test_the_private_view_cannot_be_undone(visible_directory):
    """A program may make a user namespace of its own and be root in it; the mounts it was given
    then come to it locked: it can neither make them writable nor uncover what a tmpfs hides."""
    if sandbox_isolation().files != "private" or sandbox_isolation().user == "root":
        pytest.skip("no private view here, or the program runs as root and may undo it")
    os.chmod(visible_directory, 0o1777)
    hidden = tempfile.mkdtemp(prefix=unique_marker())  # in /tmp, which the program must not see
    source = f"""
        import ctypes, os
        libc = ctypes.CDLL(None, use_errno=True)
        # All capabilities in the new namespace, until exec; mapping its uid to 0 there would need
        # /proc/self/uid_map, which is read-only like every mount.
        if libc.unshare(0x10000000 | 0x00020000) != 0:  # CLONE_NEWUSER | CLONE_NEWNS
            print("no user namespace")
        else:
            attr = (ctypes.c_uint64 * 4)(0, 1, 0, 0)  # struct mount_attr: clear MOUNT_ATTR_RDONLY
            for name, result in [
                ("remount / writable", libc.mount(None, b"/", None, 32 | 4096, None)),  # MS_REMOUNT | MS_BIND
                ("clear read-only", libc.syscall(442, -100, b"/", 0x8000, attr, 32)),  # mount_setattr, AT_RECURSIVE
                ("unmount /tmp", libc.umount2(b"/tmp", 2)),  # MNT_DETACH
            ]:
                print(name, "succeeded" if result == 0 else "refused")
        print("sees hidden" if os.path.exists({hidden!r}) else "hidden stays hidden")
        try:
            open(os.path.join({visible_directory!r}, "left.txt"), "w").write("left")
            print("write succeeded")
        except OSError as error:
            print("write refused", error.errno)
    """
    try:
        result = run_python(source)
    finally:
        os.rmdir(hidden)
    assert result.status == "passed", result
    assert "succeeded" not in result.stdout and "sees hidden" not in result.stdout, result.stdout
    assert result.stdout.endswith(f"hidden stays hidden\nwrite refused {errno.EROFS}\n"), result.stdout
    assert os.listdir(visible_directory) == []


def test_private_tmp_is_capped():
    """The private tmpfs are memory: each holds 64 MiB (PRIVATE_TMPFS_OPTIONS), whatever a program writes."""
    if sandbox_isolation().files != "private":
        pytest.skip(f"file guard is {sandbox_isolation().files!r}: no private tmpfs")
    source = """
        import errno
        written = 0
        try:
            for number in range(8):  # 8 files of 15 MiB, each under RLIMIT_FSIZE
                with open(f"/tmp/file{number}", "wb") as file:
                    for _ in range(15):
                        file.write(bytes(1024 * 1024))
                        file.flush()
                        written += 1
        except OSError as error:
            print("stopped", errno.errorcode[error.errno], written)
    """
    result = run_python(source)
    assert result.status == "passed" and result.stdout.startswith("stopped ENOSPC "), result
    assert 60 <= int(result.stdout.split()[-1]) <= 64, result.stdout


def test_working_directory_is_fresh_holds_the_files_and_is_removed():
    files = {"main.py": "import os\nprint(os.getcwd())\nprint(sorted(os.listdir('.')))\n"
                        "print(open('data/input.txt').read())\n",
             "data/input.txt": "payload"}
    first = run_untrusted([*PYTHON, "main.py"], files)
    second = run_untrusted([*PYTHON, "main.py"], files)
    assert first.status == second.status == "passed", first
    cwd, listing, payload = first.stdout.splitlines()
    assert listing == "['data', 'main.py']"
    assert payload == "payload"
    assert os.path.isabs(cwd) and not os.path.exists(cwd)
    assert second.stdout.splitlines()[0] != cwd


def test_program_that_locks_its_own_files_is_still_cleaned_up():
    source = """
        import os
        os.makedirs("locked/inner")
        open("locked/inner/file", "w").write("x")
        os.chmod("locked/inner", 0)
        os.chmod("locked", 0)
        os.chmod(".", 0o500)
        print(os.getcwd())
    """
    result = run_python(source)
    assert result.status == "passed", result
    assert not os.path.exists(result.stdout.strip())


def test_per_run_uids_ignore_the_seeded_global_random():
    """`codecl run` seeds `random` (accelerate's set_seed): the uid draw must neither follow that
    seed (two runs with one seed would share uids, and kill or read each other's programs) nor
    move the global generator on (evaluation would change what training draws next)."""
    if sandbox_isolation().user != "uid":
        pytest.skip("no per-run uids on this machine")
    import random

    random.seed(1234)
    expected_next = random.random()
    uids = []
    for _ in range(3):
        random.seed(1234)
        uids.append(run_python("import os; print(os.getuid())").stdout)
        assert random.random() == expected_next
    assert len(set(uids)) > 1, uids


HOLDER = """
import ctypes, sys, time
from codecl.evaluate.sandbox import UID_RANGE, _reserve_uid
if sys.argv[1] == "another":  # a network namespace of its own, like a container's or a CI job's
    if ctypes.CDLL(None, use_errno=True).unshare(0x40000000) != 0:  # CLONE_NEWNET
        sys.exit(f"unshare: errno {ctypes.get_errno()}")
held = []
for uid in UID_RANGE[:len(UID_RANGE) - int(sys.argv[2])]:
    deadline = time.monotonic() + 30
    while (reservation := _reserve_uid(uid)) is None:  # the way the sandbox reserves a uid
        assert time.monotonic() < deadline, f"uid {uid} stays held: a run of another codecl process?"
        time.sleep(0.01)  # held by another codecl process's run for a moment
    held.append(reservation)
print("ready", flush=True)
sys.stdin.read()
"""


@contextlib.contextmanager
def uids_held_by_another_process(namespace: str, left_free: int):
    """Another process holds every uid of UID_RANGE but the last ``left_free``, in this network
    namespace (``namespace="same"``) or in a new one ("another")."""
    if sandbox_isolation().user != "uid":
        pytest.skip("no per-run uids on this machine")
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, namespace, str(left_free)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "ready"
        yield holder
    finally:
        holder.kill()
        holder.wait()


@pytest.mark.parametrize("namespace", ["same", "another"])
def test_a_uid_another_process_holds_is_never_drawn(namespace):
    """Two codecl processes must not share a uid: the clean-up of one would kill the other's programs.
    "another": the holder is in another network namespace, where an abstract socket, the former
    reservation, is not seen."""
    # A few left free, not one: a run of another codecl process on this machine may hold one a moment.
    with uids_held_by_another_process(namespace, left_free=4):
        uids = {int(run_python("import os; print(os.getuid())").stdout) for _ in range(3)}
    assert uids <= set(UID_RANGE[-4:]), uids


def test_a_reservation_ends_with_its_process(monkeypatch):
    """The kernel drops a reservation when its holder dies, however it dies: no stale lock to clear."""
    monkeypatch.setattr(sandbox, "UID_WAIT_S", 0.2)
    with uids_held_by_another_process("same", left_free=0) as holder:
        with pytest.raises(RuntimeError, match="every sandbox uid .* is taken"):
            run_python("pass")
        holder.kill()
        holder.wait()
        result = run_python("print('ran')")
    assert result.status == "passed" and result.stdout == "ran\n", result


def test_a_run_waits_for_a_uid_another_process_releases():
    """Every uid held elsewhere for a moment (say, by this very test file in another checkout) delays a
    run; it does not fail it."""
    with uids_held_by_another_process("same", left_free=0) as holder:
        threading.Timer(1.0, holder.kill).start()
        result = run_python("print('ran')")
    assert result.status == "passed" and result.stdout == "ran\n", result


@pytest.mark.parametrize("guard", ["this-machine", "walk"])
def test_files_left_in_world_writable_folders_are_removed(guard):
    """One sample must not leave data for a later one, at any depth: at the top of each folder of
    WORLD_WRITABLE_DIRS, and in a folder open to all that another user (this test) made inside /tmp,
    where that user keeps a file. "walk": the fallback without a private view, which searches."""
    isolation = None if guard == "this-machine" else isolation_with(files="walk")
    if guard == "this-machine" and sandbox_isolation().files == "none":
        pytest.skip("file guard is 'none' here: what a program leaves stays")
    marker = unique_marker()
    shared = os.path.join("/tmp", marker)
    os.makedirs(os.path.join(shared, "open"))
    os.chmod(shared, 0o755)
    os.chmod(os.path.join(shared, "open"), 0o1777)
    with open(os.path.join(shared, "open", "others.txt"), "w") as file:
        file.write("another user's")
    folders = [folder for folder in WORLD_WRITABLE_DIRS if os.path.isdir(folder)]
    source = f"""
        import os
        nested = os.path.join({shared!r}, "open", "deeper")
        os.makedirs(nested, exist_ok=True)  # in a private /tmp, made anew
        open(os.path.join(nested, "data"), "w").write("left")
        open(os.path.join({shared!r}, "open", "left.txt"), "w").write("left")
        for folder in {folders!r}:
            os.makedirs(f"{{folder}}/{marker}-own/deeper")
            open(f"{{folder}}/{marker}-own/deeper/data", "w").write("left")
            open(f"{{folder}}/{marker}.txt", "w").write("left")
            os.symlink("/etc/passwd", f"{{folder}}/{marker}.link")
        print("written")
    """
    try:
        result = run_python(source, isolation=isolation)
        assert result.status == "passed" and result.stdout.strip() == "written", result
        assert os.listdir(os.path.join(shared, "open")) == ["others.txt"]
        for folder in folders:
            assert [name for name in os.listdir(folder) if marker in name] == ([marker] if folder == "/tmp" else [])
        assert os.path.isfile("/etc/passwd")  # the link was removed, not what it pointed to
    finally:  # what a broken sandbox left
        for folder in folders:
            for name in os.listdir(folder):
                if marker in name:
                    subprocess.run(["rm", "-rf", os.path.join(folder, name)])


@pytest.mark.parametrize("guard", ["this-machine", "walk"])
def test_folders_nested_thousands_deep_are_removed(guard):
    """shutil.rmtree recurses once per level: such a tree ended the whole evaluation with a RecursionError."""
    isolation = None if guard == "this-machine" else isolation_with(files="walk")
    marker = unique_marker()
    source = f"""
        import os
        print(os.getcwd())
        for start in (os.getcwd(), "/tmp/{marker}"):
            os.makedirs(start, exist_ok=True)
            os.chdir(start)
            for _ in range(3000):
                os.mkdir("d")
                os.chdir("d")
    """
    try:
        result = run_python(source, isolation=isolation, timeout_s=30.0)
        assert result.status == "passed", result
        assert not os.path.exists(result.stdout.strip())
        if sandbox_isolation().user == "uid":
            assert not os.path.exists(f"/tmp/{marker}")
    finally:  # what a broken sandbox left
        subprocess.run(["rm", "-rf", f"/tmp/{marker}"])


def test_the_walk_survives_a_deep_folder_of_another_user():
    """The walk searches others' folders only WALK_MAX_DEPTH levels deep: a tree thousands deep in
    /tmp (another user's, or one a program of another run is still making) must not break it."""
    isolation = isolation_with(files="walk")
    marker = unique_marker()
    top = tempfile.mkdtemp(prefix=marker)
    os.chmod(top, 0o755)
    handle = os.open(top, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for _ in range(3000):
            os.mkdir("d", 0o755, dir_fd=handle)
            below = os.open("d", os.O_RDONLY | os.O_DIRECTORY, dir_fd=handle)
            os.close(handle)
            handle = below
    finally:
        os.close(handle)
    try:
        result = run_python(f"open('/tmp/{marker}.txt', 'w')", isolation=isolation)
        assert result.status == "passed", result
        assert not os.path.exists(f"/tmp/{marker}.txt")
    finally:
        subprocess.run(["rm", "-rf", top], check=True)


def test_ipc_objects_do_not_outlive_the_program():
    """SysV shared memory outlives the process that made it; a private IPC namespace does not. The
    control: without the private view the segment stays (FILE_GUARDS["walk"] says so)."""
    if sandbox_isolation().files != "private":
        pytest.skip(f"file guard is {sandbox_isolation().files!r}: no private IPC namespace")
    key = 1 + int(uuid.uuid4().hex[:7], 16)  # 0 is IPC_PRIVATE
    source = f"""
        import ctypes
        identifier = ctypes.CDLL(None).shmget({key}, 4096, 0o1666)  # IPC_CREAT, mode 0666
        print("created" if identifier >= 0 else "failed")
    """
    try:
        result = run_python(source)
        assert result.stdout == "created\n", result
        assert shared_memory_with_key(key) == []
        if sandbox_isolation().user == "uid":  # the walk needs a per-run uid
            control = run_python(source, isolation=isolation_with(files="walk"))
            assert control.stdout == "created\n" and len(shared_memory_with_key(key)) == 1, control
    finally:
        for identifier in shared_memory_with_key(key):
            ctypes.CDLL(None).shmctl(identifier, 0, None)  # IPC_RMID


def shared_memory_with_key(key: int) -> list[int]:
    """Ids of this IPC namespace's SysV shared memory segments with ``key``."""
    with open("/proc/sysvipc/shm") as file:
        rows = [line.split() for line in file.readlines()[1:]]
    return [int(row[1]) for row in rows if int(row[0]) == key]


# -------------------------------------------------------------------------------- network


@pytest.fixture
def listener():
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    server.setblocking(False)
    yield server
    server.close()


@pytest.mark.parametrize("guard", ["this-machine", "filter-alone"])
def test_network_is_unreachable(listener, guard):
    """"filter-alone": the fallback without namespaces, where only the seccomp filter stands."""
    if sandbox_isolation().network == "none":
        pytest.skip("no network guard on this machine: the program can reach the network")
    if guard == "filter-alone" and not has_socket_filter():
        pytest.skip(f"no socket filter here: {sandbox_isolation().network!r}")
    port = listener.getsockname()[1]
    source = f"""
        import socket
        for address in [("127.0.0.1", {port}), ("1.1.1.1", 53)]:
            try:
                socket.create_connection(address, timeout=2).close()
                print(address[0], "connected")
            except OSError as error:
                print(address[0], "refused", type(error).__name__)
    """
    result = run_python(source, isolation=None if guard == "this-machine" else isolation_with(network="seccomp"))
    assert result.status == "passed", result
    assert "connected" not in result.stdout
    assert result.stdout.count("refused") == 2, result.stdout
    readable, _, _ = select.select([listener], [], [], 0.5)
    assert readable == [], "the sandboxed program reached the test's listening socket"
    with pytest.raises(BlockingIOError):
        listener.accept()


def test_listener_is_reachable_from_outside_the_sandbox(listener):
    """The control for the test above: the same connection, unsandboxed, is accepted."""
    port = listener.getsockname()[1]
    done = subprocess.run([*PYTHON, "-c", f"import socket; socket.create_connection(('127.0.0.1', {port}), timeout=2)"])
    assert done.returncode == 0
    readable, _, _ = select.select([listener], [], [], 5)
    assert readable == [listener]


def has_socket_filter() -> bool:
    return sandbox_isolation().network.endswith("seccomp")


@pytest.mark.parametrize("guard", ["this-machine", "filter-alone"])
def test_no_socket_of_any_family_can_be_made(guard):
    """A network namespace still lets a program make sockets (Unix, vsock to the hypervisor): the
    seccomp filter refuses them all, and io_uring, which makes sockets without socket(2). It leaves
    socketpair, which reaches nothing outside. "filter-alone": the fallback without namespaces."""
    if not has_socket_filter():
        pytest.skip(f"no socket filter here: {sandbox_isolation().network!r}")
    isolation = None if guard == "this-machine" else isolation_with(network="seccomp")
    source = """
        import ctypes, os, socket
        for name, kind in [("AF_UNIX", socket.SOCK_STREAM), ("AF_INET", socket.SOCK_STREAM),
                           ("AF_INET6", socket.SOCK_DGRAM), ("AF_NETLINK", socket.SOCK_DGRAM),
                           ("AF_VSOCK", socket.SOCK_STREAM)]:
            try:
                socket.socket(getattr(socket, name), kind).close()
                print(name, "made")
            except OSError as error:
                print(name, "refused", type(error).__name__)
        libc = ctypes.CDLL(None, use_errno=True)
        ring = libc.syscall(425, 1, ctypes.create_string_buffer(120))  # io_uring_setup, x86_64 and aarch64
        print("io_uring", "made" if ring >= 0 else os.strerror(ctypes.get_errno()))
        one, other = socket.socketpair()
        one.sendall(b"pair")
        print("socketpair", other.recv(4).decode())
    """
    result = run_python(source, isolation=isolation)
    assert result.status == "passed", result
    assert result.stdout.splitlines() == [
        *(f"{name} refused PermissionError" for name in ("AF_UNIX", "AF_INET", "AF_INET6", "AF_NETLINK", "AF_VSOCK")),
        f"io_uring {os.strerror(errno.ENOSYS)}", "socketpair pair"]


@pytest.fixture
def unix_listener(visible_directory):
    """A Unix socket any uid may connect to (0777), where no tmpfs of the sandbox hides it, as a
    local daemon's would be (/run/postgresql, /run/dbus)."""
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    path = os.path.join(visible_directory, "daemon.sock")
    server.bind(path)
    os.chmod(path, 0o777)
    server.listen(8)
    server.setblocking(False)
    yield server
    server.close()


def connect_and_send(path: str, token: str) -> str:
    return f"""
        import socket
        try:
            client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            client.connect({path!r})
            client.sendall(b"{token}")
            print("connected")
        except OSError as error:
            print("refused", type(error).__name__)
    """


def test_unix_socket_reached_by_path_is_refused(unix_listener):
    if not has_socket_filter():
        pytest.skip(f"no socket filter here: {sandbox_isolation().network!r}")
    result = run_python(connect_and_send(unix_listener.getsockname(), uuid.uuid4().hex))
    assert result.status == "passed" and result.stdout == "refused PermissionError\n", result
    readable, _, _ = select.select([unix_listener], [], [], 0.5)
    assert readable == [], "the sandboxed program reached the test's Unix socket"


def test_a_network_namespace_alone_leaves_unix_sockets_reachable(unix_listener):
    """The control for the test above, and the reason for the filter: the same sandbox without it
    (the fallback for a CPU it has no table for) lets the program in, and its token arrives."""
    if not has_socket_filter():
        pytest.skip(f"no socket filter here: {sandbox_isolation().network!r}")
    without_filter = isolation_with(network=sandbox_isolation().network.split("+")[0])
    token = uuid.uuid4().hex
    result = run_python(connect_and_send(unix_listener.getsockname(), token), isolation=without_filter)
    assert result.stdout == "connected\n", result
    readable, _, _ = select.select([unix_listener], [], [], 5)
    assert readable == [unix_listener]
    connection, _ = unix_listener.accept()
    with connection:
        connection.settimeout(5)
        assert connection.recv(64) == token.encode()


# ---------------------------------------------------------------------------- environment


def test_environment_holds_only_the_allowed_names(monkeypatch):
    secret = f"secret-{uuid.uuid4().hex}"
    monkeypatch.setenv("CODECL_SECRET_FOR_TEST", secret)
    source = "import os\nprint(sorted(os.environ))\nprint(os.environ['HOME'] == os.getcwd())\nprint(dict(os.environ))\n"
    result = run_python(source)
    assert result.status == "passed", result
    names, home_is_cwd, _ = result.stdout.splitlines()
    assert names == "['HOME', 'LANG', 'PATH']"
    assert home_is_cwd == "True"
    assert secret not in result.stdout and "CODECL_SECRET_FOR_TEST" not in result.stdout


# ---------------------------------------------------------------------------------- run_many


def test_run_many_returns_results_in_order():
    exit_codes = [0, 1, 0, 0, 2, 1, 0, 3]
    jobs = [([*PYTHON, "job.py"], {"job.py": f"import sys, time\ntime.sleep({0.2 if i % 3 == 0 else 0})\n"
                                              f"print({i})\nsys.exit({code})\n"})
            for i, code in enumerate(exit_codes)]
    results = run_many(jobs, workers=2, timeout_s=10.0)
    assert [r.stdout for r in results] == [f"{i}\n" for i in range(len(exit_codes))]
    assert [r.returncode for r in results] == exit_codes
    assert [r.status for r in results] == ["passed" if code == 0 else "failed" for code in exit_codes]


# -------------------------------------------------------------------------------------- node


requires_node = pytest.mark.skipif(shutil.which("node") is None, reason="Node.js is not installed")


@requires_node
def test_node_program_passes_and_fails():
    passed = run_untrusted(["node", "program.js"], {"program.js": "console.log(6 * 7);"})
    failed = run_untrusted(["node", "program.js"], {"program.js": "process.exit(4);"})
    assert passed.status == "passed" and passed.stdout == "42\n", passed
    assert failed.status == "failed" and failed.returncode == 4


@requires_node
def test_node_busy_loop_times_out():
    started = time.monotonic()
    result = run_untrusted(["node", "program.js"], {"program.js": "while (true) {}"}, timeout_s=2.0)
    assert result.status == "timeout", result
    assert time.monotonic() - started < 2.0 + SLACK_S


def test_without_uid_reservations_the_probe_falls_back(monkeypatch):
    """A /run where the uid locks cannot live (read-only, or not root's) costs the per-run uid, not the run."""
    if os.geteuid() != 0:
        pytest.skip("per-run uids are tried as root only")
    monkeypatch.setattr(sandbox, "UID_LOCK_DIR", "/proc/codecl-no-such-folder")
    isolation = sandbox._probe_isolation()
    assert isolation.user == "root"
