"""The sandbox: hostile programs are contained, scored as failures, and leave the machine unharmed.

Every test checks an effect a broken sandbox would show (a surviving process, a deleted file, an
accepted connection, a leaked variable), not only the status the sandbox reports.
"""

import os
import select
import shutil
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
import uuid

import pytest

from codecl.evaluate.sandbox import OUTPUT_LIMIT_BYTES, run_many, run_untrusted, sandbox_isolation

PYTHON = [sys.executable, "-I"]
# A containment bound, not a performance target: the timeout plus the supervisor's start, its
# clean-up and a loaded 2-core machine.
SLACK_S = 15.0


def run_python(source: str, name: str = "program.py", **limits):
    return run_untrusted([*PYTHON, name], {name: textwrap.dedent(source)}, **limits)


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
def outside_file():
    """A file the program can reach and read but whose directory is not its own: /tmp/<dir, 0755>/<file, 0644>.

    Not under pytest's tmp_path, whose parents are 0700: there the program could not even see the
    file, and the test would prove nothing about its uid.
    """
    directory = tempfile.mkdtemp(prefix="codecl-sandbox-test-")
    os.chmod(directory, 0o755)
    path = os.path.join(directory, "precious.txt")
    with open(path, "w") as file:
        file.write("do not touch")
    os.chmod(path, 0o644)
    yield path
    shutil.rmtree(directory, ignore_errors=True)  # a broken sandbox may have removed it


def test_files_outside_the_sandbox_cannot_be_changed(outside_file):
    if sandbox_isolation().user != "uid":
        pytest.skip(f"user guard is {sandbox_isolation().user!r}, not a per-run uid: "
                    "the program may change this user's files")
    directory = os.path.dirname(outside_file)
    source = f"""
        import os, shutil
        target = {outside_file!r}
        print("read:", open(target).read())  # it can see the file: only its uid protects it
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
    result = run_python(source)
    assert "read: do not touch" in result.stdout, result
    assert "succeeded" not in result.stdout, result.stdout
    assert result.stdout.count("refused PermissionError") == 5, result.stdout
    assert os.listdir(directory) == ["precious.txt"]
    with open(outside_file) as file:
        assert file.read() == "do not touch"
    assert os.stat(outside_file).st_mode & 0o777 == 0o644


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


def test_a_uid_another_process_holds_is_never_drawn():
    """Two codecl processes must not share a uid: the clean-up of one would kill the other's programs."""
    if sandbox_isolation().user != "uid":
        pytest.skip("no per-run uids on this machine")
    from codecl.evaluate.sandbox import UID_RANGE

    # Another process reserves every uid but one, the way the sandbox itself does.
    free = UID_RANGE[-1]
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import socket, sys
        held = []
        for uid in range({UID_RANGE.start}, {free}):
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.bind(f"\\0codecl-sandbox-uid-{{uid}}")
            held.append(s)
        print("ready", flush=True)
        sys.stdin.read()
    """)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "ready"
        uids = {run_python("import os; print(os.getuid())").stdout.strip() for _ in range(2)}
        assert uids == {str(free)}
    finally:
        holder.communicate("")


def test_files_left_in_world_writable_folders_are_removed():
    """One sample must not leave data for a later one in /tmp or /dev/shm."""
    if sandbox_isolation().user != "uid":
        pytest.skip("no per-run uids on this machine: left files cannot be told apart")
    marker = unique_marker()
    source = f"""
        import os
        for folder in ("/tmp", "/dev/shm"):
            os.makedirs(f"{{folder}}/{marker}/deeper")
            open(f"{{folder}}/{marker}/deeper/data", "w").write("left")
            open(f"{{folder}}/{marker}.txt", "w").write("left")
            os.symlink("/etc/passwd", f"{{folder}}/{marker}.link")
        print("written")
    """
    result = run_python(source)
    assert result.status == "passed" and result.stdout.strip() == "written", result
    for folder in ("/tmp", "/dev/shm"):
        assert not [name for name in os.listdir(folder) if marker in name], folder
    assert os.path.isfile("/etc/passwd")  # the link was removed, not what it pointed to


# -------------------------------------------------------------------------------- network


@pytest.fixture
def listener():
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    server.setblocking(False)
    yield server
    server.close()


def test_network_is_unreachable(listener):
    if sandbox_isolation().network == "none":
        pytest.skip("no network guard on this machine: the program can reach the network")
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
    result = run_python(source, timeout_s=10.0)
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
