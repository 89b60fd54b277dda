"""scripts/upgrade.sh without an engine: the env file's image tags, and its refusals (the whole
upgrade and rollback run against the real engine in tests/e2e/test_upgrade.py)."""
import os
import subprocess
from pathlib import Path

from hub import __version__

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "upgrade.sh"


def run(*args, **env):
    return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, timeout=60,
                          env={**os.environ, **env})


def test_earlier_releases_stock_tags_are_blanked_others_kept(tmp_path):
    env = tmp_path / ".env"
    env.write_text("HUB_NAME_PREFIX=gpuhub\nHUB_IMAGE=gpuhub/hub:0.1.0\nPROXY_IMAGE=gpuhub/proxy:0.1.0\n"
                   f"SINGLEUSER_IMAGE=registry.example.org/lab/notebook:2\nCADDY_IMAGE=gpuhub/caddy:{__version__}\n"
                   "PROMETHEUS_IMAGE=gpuhub/prometheus:test\n")
    result = run("migrate-env", str(env))
    assert result.returncode == 0, result.stderr
    assert env.read_text() == ("HUB_NAME_PREFIX=gpuhub\nHUB_IMAGE=\nPROXY_IMAGE=\n"
                               f"SINGLEUSER_IMAGE=registry.example.org/lab/notebook:2\nCADDY_IMAGE=gpuhub/caddy:{__version__}\n"
                               "PROMETHEUS_IMAGE=gpuhub/prometheus:test\n")
    assert f"HUB_IMAGE=gpuhub/hub:0.1.0 (an earlier release's tag) -> blank: gpuhub/hub:{__version__}" in result.stdout
    again = run("migrate-env", str(env))
    assert "no earlier release's image tag to change" in again.stdout and env.read_text().count("=\n") == 2


def test_upgrade_without_an_env_file_says_there_is_nothing_to_upgrade(tmp_path):
    result = run("upgrade", ENV_FILE=str(tmp_path / "missing.env"))
    assert result.returncode == 1
    assert "no env file" in result.stderr and "make up" in result.stderr


def test_rollback_refuses_a_folder_that_is_not_a_backup(tmp_path):
    result = run("rollback", str(tmp_path))
    assert result.returncode == 1 and "/meta is missing: not a backup written by make upgrade" in result.stderr
    assert run("rollback", str(tmp_path / "nope")).stderr.startswith("upgrade: no backup folder")
    assert "usage" in run("rollback").stderr
    assert "usage" in run("bogus").stderr


def test_make_rollback_without_backup_names_the_argument():
    result = subprocess.run(["make", "-s", "rollback"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "make rollback BACKUP=backups/" in result.stderr
