"""gpuhub-gpus against the console app (stand-in engine and hub) on a loopback port."""
import json

import pytest
from console_fakes import ADMIN_TOKEN, GPUS, USER_TOKEN, ServedApp, app_for, container, make_console

from hub.service_process.console import cli


@pytest.fixture
def hub(tmp_path, monkeypatch):
    monkeypatch.delenv("GPUHUB_TOKEN", raising=False)
    monkeypatch.delenv("JUPYTERHUB_API_TOKEN", raising=False)
    monkeypatch.delenv("GPUHUB_URL", raising=False)
    console, engine, fake_hub = make_console(tmp_path)
    with ServedApp(app_for(console)) as served:
        served.engine, served.hub, served.tmp_path = engine, fake_hub, tmp_path
        yield served


def gpus(hub, *args, token=ADMIN_TOKEN):
    argv = ["--url", hub.url, *(["--token", token] if token else []), *args]
    return cli.main(argv)


def test_list_shows_the_table(hub, capsys):
    hub.engine.containers = [container("gpuhubtest-alice", GPUS[2].uuid, "alice")]
    assert gpus(hub, "list") == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0].split()[:4] == ["#", "UUID", "MODEL", "MEM"]
    assert GPUS[2].uuid in lines[3] and "held by alice since" in lines[3] and "/user/alice/" in lines[3]
    assert "GPUs may be used by: everyone" in out and "Usage: n/a" in out
    assert gpus(hub, "--json", "list") == 0
    assert len(json.loads(capsys.readouterr().out)["gpus"]) == 4


def test_pin_by_index_unpin_drain_undrain_and_audit(hub, capsys):
    assert gpus(hub, "pin", "alice", "#1", "--note", "course") == 0
    assert "Pinned alice to GPU #1" in capsys.readouterr().out
    assert json.loads((hub.tmp_path / "gpu-intent.json").read_text())["pins"] == {"alice": GPUS[1].uuid}
    assert gpus(hub, "unpin", "alice") == 0
    assert gpus(hub, "drain", "3") == 0
    assert gpus(hub, "undrain", GPUS[3].uuid) == 0
    capsys.readouterr()
    assert gpus(hub, "audit", "-n", "10") == 0
    out = capsys.readouterr().out.splitlines()
    assert [line.split()[2] for line in out] == ["undrain", "drain", "unpin", "pin"]
    assert out[-1].endswith("— course")


def test_free_needs_confirmation(hub, capsys, monkeypatch):
    hub.engine.containers = [container("gpuhubtest-bob", GPUS[0].uuid, "bob")]
    monkeypatch.setattr("sys.stdin.isatty", lambda: False)
    assert gpus(hub, "free", "0") == 2
    assert "--yes" in capsys.readouterr().err and hub.hub.stopped == []
    monkeypatch.setattr("sys.stdin.isatty", lambda: True)
    monkeypatch.setattr("builtins.input", lambda prompt: "n")
    assert gpus(hub, "free", "0") == 0 and hub.hub.stopped == []
    monkeypatch.setattr("builtins.input", lambda prompt: "y")
    assert gpus(hub, "free", "0") == 0 and hub.hub.stopped == [("bob", "")]
    assert "Stopped bob's server" in capsys.readouterr().out


def test_free_by_user_with_yes(hub, capsys):
    hub.engine.containers = [container("gpuhubtest-bob", GPUS[0].uuid, "bob")]
    assert gpus(hub, "free", "--user", "bob", "--yes") == 0
    assert hub.hub.stopped == [("bob", "")]


def test_access_show_set_keep_and_everyone(hub, capsys):
    assert gpus(hub, "access") == 0
    assert capsys.readouterr().out.strip() == "everyone"
    assert gpus(hub, "access", "--users", "alice, bob") == 0
    assert gpus(hub, "access", "--groups", "ml") == 0  # users are kept
    capsys.readouterr()
    assert gpus(hub, "access") == 0
    assert capsys.readouterr().out.splitlines() == ["users: alice, bob", "groups: ml"]
    assert gpus(hub, "access", "--everyone") == 0
    assert "access" not in json.loads((hub.tmp_path / "gpu-intent.json").read_text())


def test_api_refusals_exit_1_with_the_message(hub, capsys):
    assert gpus(hub, "pin", "mallory", "0") == 1
    assert "no user 'mallory' on this hub (names are as on the hub's admin page) (HTTP 400)" in capsys.readouterr().err
    assert gpus(hub, "list", token=USER_TOKEN) == 1
    assert "admins only (HTTP 403)" in capsys.readouterr().err
    assert gpus(hub, "undrain", "GPU-nope") == 1
    assert "HTTP 404" in capsys.readouterr().err


def test_usage_errors_exit_2(hub, capsys):
    assert gpus(hub, "list", token=None) == 2
    assert "/hub/token" in capsys.readouterr().err
    assert gpus(hub, "pin", "alice", "nine") == 2
    assert "neither a GPU index nor a UUID" in capsys.readouterr().err
    assert gpus(hub, "drain", "9") == 2
    assert "index 9 names no GPU" in capsys.readouterr().err
    assert gpus(hub, "free", "0", "--user", "bob", "--yes") == 2
    assert gpus(hub, "access", "--everyone", "--users", "a") == 2
    with pytest.raises(SystemExit):
        gpus(hub, "frobnicate")


def test_token_from_the_environment_and_unreachable_hub(hub, capsys, monkeypatch):
    monkeypatch.setenv("GPUHUB_TOKEN", ADMIN_TOKEN)
    assert cli.main(["--url", hub.url, "list"]) == 0
    capsys.readouterr()
    assert cli.main(["--url", "http://127.0.0.1:9", "list"]) == 3
    assert "cannot reach" in capsys.readouterr().err


def test_runs_as_a_module_and_a_console_script():
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-m", "hub.service_process.console.cli", "--help"], capture_output=True, text=True)
    assert r.returncode == 0 and "pin" in r.stdout and "access" in r.stdout
    import tomllib
    from pathlib import Path

    scripts = tomllib.loads((Path(__file__).parents[2] / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["gpuhub-gpus"] == "hub.service_process.console.cli:main"


def test_course_commands_roster_courses_reserve_share_stop_reset(hub, capsys, tmp_path):
    fake = hub.hub
    roster = tmp_path / "roster.csv"
    roster.write_text("email,course,role\nt@uni.example,ml101,teacher\n"
                      + "".join(f"s{i}@uni.example,ml101,student\n" for i in range(40)))
    assert gpus(hub, "roster", str(roster), "--dry-run") == 0
    out = capsys.readouterr().out
    assert "Would import the roster of ml101: 41 new users" in out and fake.changes == []
    assert gpus(hub, "roster", str(roster)) == 0
    assert "ml101: 41 members (40 students; teachers: t@uni.example" in capsys.readouterr().out
    assert gpus(hub, "course", "ml101", "--max-hours", "3", "--title", "ML") == 0
    assert gpus(hub, "reserve", "ml101", "2", "--start", "2027-01-15T09:00+01:00", "--end", "2027-01-15T11:00+01:00") == 0
    assert "Reserved GPUs #0, #1 for course ml101 from 2027-01-15T08:00Z" in capsys.readouterr().out
    assert gpus(hub, "courses") == 0
    out = capsys.readouterr().out
    assert "ml101 (ML): 40 students" in out and "sessions <= 3 h" in out and "2 GPUs 2027-01-15T08:00Z" in out
    assert gpus(hub, "share", "3", "4") == 0 and "by up to 4" in capsys.readouterr().out
    assert gpus(hub, "unshare", "3") == 0
    fake.started = {("s1@uni.example", ""): "x"}
    assert gpus(hub, "stop-course", "ml101", "--yes") == 0 and fake.stopped == [("s1@uni.example", "")]
    assert gpus(hub, "reset", "ml101", "s2@uni.example", "--yes") == 0
    assert "files are untouched" in capsys.readouterr().out


def test_roster_with_bad_rows_prints_them_and_exits_1(hub, capsys, tmp_path):
    roster = tmp_path / "roster.yaml"
    roster.write_text("- {username: a, course: ml101}\n- {username: b, course: ml101, role: wizard}\n")
    assert gpus(hub, "roster", str(roster)) == 1
    err = capsys.readouterr().err
    assert "bad row, line 2: unknown role 'wizard'" in err and "nothing was changed" in err
    assert gpus(hub, "roster", str(tmp_path / "missing.csv")) == 2


def test_queue_list_move_and_remove(hub, capsys):
    import threading

    from hub.gpus.queue import GPUQueue

    line = GPUQueue(hub.tmp_path / "gpu-queue.json")
    for name in ("alice", "carol", "dave"):
        line.join(name, "")
    stop = threading.Event()
    threading.Thread(target=lambda: [line.apply_moves() for _ in iter(lambda: stop.wait(0.1), True)],
                     daemon=True).start()  # the hub's waiters, looking for moves
    try:
        assert gpus(hub, "queue") == 0
        assert [ln.split()[:2] for ln in capsys.readouterr().out.splitlines()] == [["1", "alice"], ["2", "carol"],
                                                                                  ["3", "dave"]]
        assert gpus(hub, "queue", "move", "dave", "1", "--note", "deadline") == 0
        assert "Moved dave in the line for a GPU from place 3 to 1" in capsys.readouterr().out
        assert [w.user for w in line.waiters] == ["dave", "alice", "carol"]
        assert gpus(hub, "queue", "move", "dave", "9") == 1
        assert "'position' must be from 1 to 3 (HTTP 400)" in capsys.readouterr().err
        assert gpus(hub, "queue", "move", "dave") == 2 and gpus(hub, "queue", "move") == 2
        assert gpus(hub, "queue", "move", "dave", "2", token=USER_TOKEN) == 1
        assert "HTTP 403" in capsys.readouterr().err
        assert gpus(hub, "queue", "remove", "carol") == 0
        assert hub.hub.stopped == [("carol", "")]
    finally:
        stop.set()
