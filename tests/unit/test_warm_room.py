"""images/singleuser/gpuhub_warm/room.py: the warm kernel's settings, the code a spare runs and
whether memory has room for one. This environment has no jupyter_server; the manager itself is
checked in the image by tests/e2e/test_warm_kernel.py (a browser notebook gets the spare)."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

IMAGE = Path(__file__).resolve().parents[2] / "images/singleuser"
sys.path.insert(0, str(IMAGE))
from gpuhub_warm import room  # noqa: E402

MiB = 2**20


def test_on_unless_turned_off():
    assert room.enabled({}) is True
    assert room.enabled({"GPUHUB_WARM_KERNEL": "on"}) is True
    for off in ("off", "0", "false", "No", " OFF "):
        assert room.enabled({"GPUHUB_WARM_KERNEL": off}) is False


def test_imports_parse_spaces_and_commas_and_reject_code():
    assert room.parse_imports(None) == room.DEFAULT_IMPORTS
    assert room.parse_imports("") == ()
    assert room.parse_imports(" torch, numpy  matplotlib.pyplot") == ("torch", "numpy", "matplotlib.pyplot")
    for bad in ("os; import shutil", "torch)", "a..b", "1abc"):
        with pytest.raises(ValueError, match="GPUHUB_WARM_IMPORTS"):
            room.parse_imports(bad)


def run_in_fresh_python(code: str) -> dict:
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_warm_code_imports_in_a_lower_priority_thread_and_binds_no_name():
    code = room.warm_code(("json", "no_such_module_xyz", "email.mime.text"), nice=7)
    result = run_in_fresh_python(
        "import sys, os, json as _j\nns = {}\nbefore = os.getpriority(os.PRIO_PROCESS, 0)\n"
        f"exec({code!r}, ns)\n"
        "print(_j.dumps({'names': sorted(k for k in ns if k != '__builtins__'), 'failed': ns['_gpuhub_warm_failed'],"
        " 'mime': 'email.mime.text' in sys.modules, 'before': before,"
        " 'after': os.getpriority(os.PRIO_PROCESS, 0)}))")
    assert result["mime"] is True
    assert result["names"] == ["_gpuhub_warm_failed"]  # removed again by the claim's code
    assert len(result["failed"]) == 1 and result["failed"][0].startswith("no_such_module_xyz:")
    assert result["after"] == result["before"]  # only the import thread was reniced


def test_claim_code_sets_directory_environment_and_session(tmp_path):
    code = room.claim_code(str(tmp_path), {"JPY_SESSION_NAME": str(tmp_path / "a.ipynb"), "X": "1"}, ["GONE"],
                           str(tmp_path / "a.ipynb"))
    result = run_in_fresh_python(
        "import os, json\nos.environ['GONE'] = 'y'\nns = {'_gpuhub_warm_failed': []}\n"
        f"exec({code!r}, ns)\n"
        "print(json.dumps({'cwd': os.getcwd(), 'x': os.environ.get('X'), 'gone': 'GONE' in os.environ,"
        " 'session': ns.get('__session__'), 'names': sorted(k for k in ns if k != '__builtins__')}))")
    assert result == {"cwd": str(tmp_path), "x": "1", "gone": False, "session": str(tmp_path / "a.ipynb"),
                      "names": ["__session__"]}


def test_env_change():
    assert room.env_change({"A": "1", "B": "2", "C": "3"}, {"A": "1", "B": "9", "D": "4"}) == (
        {"B": "9", "D": "4"}, ["C"])


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def meminfo(tmp_path, total_mib=24_000, available_mib=20_000) -> Path:
    path = tmp_path / "meminfo"
    write(path, f"MemTotal: {total_mib * 1024} kB\nMemFree: 1 kB\nMemAvailable: {available_mib * 1024} kB\n")
    return path


def test_memory_from_cgroup_v2_leaves_inactive_page_cache_out(tmp_path):
    root = tmp_path / "cg"
    write(root / "memory.max", str(4096 * MiB))
    write(root / "memory.current", str(1500 * MiB))
    write(root / "memory.stat", f"anon {900 * MiB}\ninactive_file {500 * MiB}\nactive_file 1\n")
    memory = room.read_memory(root, meminfo(tmp_path))
    assert memory == room.Memory(4096 * MiB, 1000 * MiB)
    assert room.room_for_spare(memory, 512 * MiB, 512 * MiB)
    assert not room.room_for_spare(memory, 2600 * MiB, 512 * MiB)


def test_memory_from_cgroup_v1_and_unlimited_falls_back_to_the_host(tmp_path):
    root = tmp_path / "cg"
    write(root / "memory/memory.limit_in_bytes", str(2048 * MiB))
    write(root / "memory/memory.usage_in_bytes", str(1800 * MiB))
    write(root / "memory/memory.stat", f"cache 1\ntotal_inactive_file {300 * MiB}\n")
    memory = room.read_memory(root, meminfo(tmp_path))
    assert memory == room.Memory(2048 * MiB, 1500 * MiB)
    assert not room.room_for_spare(memory, 512 * MiB, 512 * MiB)  # 548 MiB free: not enough
    write(root / "memory/memory.limit_in_bytes", "9223372036854771712")  # no limit set
    assert room.read_memory(root, meminfo(tmp_path)) == room.Memory(24_000 * MiB, 4_000 * MiB)


def test_a_full_host_bounds_a_generous_limit(tmp_path):
    root = tmp_path / "cg"
    write(root / "memory.max", str(32_000 * MiB))
    write(root / "memory.current", str(1000 * MiB))
    write(root / "memory.stat", "inactive_file 0\n")
    memory = room.read_memory(root, meminfo(tmp_path, available_mib=700))
    assert memory.free == 700 * MiB
    assert not room.room_for_spare(memory, 512 * MiB, 512 * MiB)


def test_unknown_memory_starts_no_spare(tmp_path):
    assert room.read_memory(tmp_path / "none", tmp_path / "none") is None
    assert not room.room_for_spare(None, 1, 0)


def test_resident_bytes():
    status = "Name:\tpython\nVmPeak:\t 1 kB\nVmRSS:\t  2048 kB\n"
    assert room.resident_bytes(1, read=lambda path: status) == 2048 * 1024
    assert room.resident_bytes(1, read=lambda path: status + "RssAnon:\t  512 kB\n", field="RssAnon") == 512 * 1024
    assert room.resident_bytes(1, read=lambda path: (_ for _ in ()).throw(FileNotFoundError(path))) is None


def test_the_image_uses_the_manager_and_compresses():
    config = json.loads((IMAGE / "jupyter_server_config.json").read_text())["ServerApp"]
    assert config["kernel_manager_class"] == "gpuhub_warm.manager.WarmKernelManager"
    assert config["jpserver_extensions"]["gpuhub_warm"] is True
    assert config["tornado_settings"]["compress_response"] is True
    assert "COPY gpuhub_warm/*.py /opt/gpuhub/gpuhub_warm/" in (IMAGE / "Dockerfile").read_text()


def test_a_spare_leaves_the_host_room_for_servers_still_to_start():
    """The hub passes its admission reserve plus four servers (GPUHUB_WARM_HOST_RESERVE_MB): the
    container may have room, yet the host must keep it for new servers."""
    roomy = room.Memory(8 * 1024 * MiB, 300 * MiB)
    assert room.room_for_spare(roomy, 300 * MiB, 512 * MiB, host_available=4000 * MiB, host_reserve=3072 * MiB)
    assert not room.room_for_spare(roomy, 300 * MiB, 512 * MiB, host_available=3000 * MiB, host_reserve=3072 * MiB)
    assert room.room_for_spare(roomy, 300 * MiB, 512 * MiB)  # no host figure asked for: the container decides


def test_the_first_spare_waits_for_quiet_but_not_past_the_longest_wait():
    # JupyterLab's page was served at 100 with a longest wait of 10 s: a request finishing at 101
    # puts the start a quiet second later; at 109.6 only what is left of the 10 s; after it, at once.
    assert room.quiet_delay(101.0, 110.0, 1.0) == 1.0
    assert room.quiet_delay(109.6, 110.0, 1.0) == pytest.approx(0.4)
    assert room.quiet_delay(111.0, 110.0, 1.0) == 0.0

