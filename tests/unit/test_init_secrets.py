import os
import stat

from hub.hub_process.config.init_secrets import initialise, main

UID, GID = os.getuid(), os.getgid()


def mode(path):
    return stat.S_IMODE(path.stat().st_mode)


def test_first_start_creates_private_secrets(tmp_path):
    state, proxy = tmp_path / "state", tmp_path / "proxy"
    state.mkdir(), proxy.mkdir()
    created = initialise(state, proxy, None, hub_uid=UID, proxy_gid=GID)
    assert len(created) == 3 and "generated" in created[2]
    cookie = (state / "jupyterhub_cookie_secret").read_text().strip()
    assert len(bytes.fromhex(cookie)) == 32
    assert mode(state / "jupyterhub_cookie_secret") == 0o600
    assert mode(state / "admin-password") == 0o600
    assert mode(proxy / "token") == 0o440
    assert mode(state) == 0o700
    assert len((state / "admin-password").read_text().strip()) >= 16


def test_secrets_are_never_overwritten(tmp_path):
    state, proxy = tmp_path / "state", tmp_path / "proxy"
    state.mkdir(), proxy.mkdir()
    initialise(state, proxy, "first-password", hub_uid=UID, proxy_gid=GID)
    before = {p.name: p.read_text() for p in [*state.iterdir(), *proxy.iterdir()]}
    assert before["admin-password"].strip() == "first-password"
    assert initialise(state, proxy, "another-password", hub_uid=UID, proxy_gid=GID) == []
    after = {p.name: p.read_text() for p in [*state.iterdir(), *proxy.iterdir()]}
    assert after == before


def test_empty_secret_file_is_replaced(tmp_path):
    state, proxy = tmp_path / "state", tmp_path / "proxy"
    state.mkdir(), proxy.mkdir()
    (proxy / "token").write_text("")
    created = initialise(state, proxy, None, hub_uid=UID, proxy_gid=GID)
    assert "proxy token" in created
    assert len((proxy / "token").read_text().strip()) == 64


def test_short_admin_password_is_refused_before_anything_is_written(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HUB_ADMIN_PASSWORD", "  short  ")
    assert main(["--state-dir", str(tmp_path), "--proxy-token-dir", str(tmp_path)]) == 2
    assert "HUB_ADMIN_PASSWORD must have at least 8 characters" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())
