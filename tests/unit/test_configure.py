"""jupyterhub_config.py's helpers against a bare Config(), the way the hub calls them."""
import ast
import re
from pathlib import Path

import pytest
from traitlets.config import Config
from traitlets.config.loader import ConfigError

from hub.hub_process.config import oauth
from hub.settings import generate, readers
from hub.hub_process.config.configure import configure_auth, configure_culler, configure_hub, configure_spawner, read_secret
from hub.settings.table import OAUTH, SECTIONS, SETTINGS

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def token_file(tmp_path):
    path = tmp_path / "token"
    path.write_text("s3cret\n")
    return str(path)


def test_hub_uses_external_proxy_state_volume_and_keeps_servers(token_file):
    c = Config()
    configure_hub(c, {}, proxy_token_file=token_file)
    assert c.ConfigurableHTTPProxy.should_start is False
    assert c.ConfigurableHTTPProxy.auth_token == "s3cret"
    assert c.ConfigurableHTTPProxy.api_url == "http://proxy:8001"
    assert c.JupyterHub.cleanup_servers is False
    assert c.JupyterHub.db_url.startswith("sqlite:////srv/jupyterhub/state/")
    assert c.JupyterHub.upgrade_db is True  # SQLite: JupyterHub backs the file up first
    assert c.JupyterHub.cookie_secret_file.startswith("/srv/jupyterhub/state/")


def test_missing_proxy_token_says_how_to_fix(tmp_path):
    with pytest.raises(ConfigError, match="docker compose up -d"):
        configure_hub(Config(), {}, proxy_token_file=str(tmp_path / "absent"))
    (tmp_path / "empty").write_text("  \n")
    with pytest.raises(ConfigError, match="it is empty"):
        read_secret(str(tmp_path / "empty"))


def test_auth_defaults_to_native_with_seeded_admin():
    c = Config()
    configure_auth(c, {"HUB_ADMIN_USER": "root-admin"})
    assert c.JupyterHub.authenticator_class == "hub.hub_process.config.native_auth.SeededNativeAuthenticator"
    assert c.Authenticator.admin_users == {"root-admin"}
    assert c.NativeAuthenticator.open_signup is False
    assert c.SeededNativeAuthenticator.initial_admin_password_file.endswith("/admin-password")


def test_spawner_defaults():
    c = Config()
    configure_spawner(c, {})
    assert c.JupyterHub.spawner_class == "hub.hub_process.spawner.GPUDockerSpawner"
    assert c.DockerSpawner.remove is True
    assert c.DockerSpawner.network_name == "gpuhub-net"
    assert c.DockerSpawner.volumes == {"gpuhub-user-{username}": "/home/jovyan/work"}
    assert c.DockerSpawner.notebook_dir == "/home/jovyan/work"
    assert c.DockerSpawner.mem_limit == 8 * 2**30
    assert c.DockerSpawner.cpu_limit == 2.0
    assert c.GPUDockerSpawner.shm_size == 2**30
    assert c.GPUDockerSpawner.pids_limit == 1024
    # no 429 for the 101st start pending: the hub's own line makes it wait, and says so
    assert c.JupyterHub.concurrent_spawn_limit == 0


def test_spawner_from_env():
    c = Config()
    configure_spawner(c, {"HUB_NAME_PREFIX": "lab", "USER_MEM_LIMIT": "16G", "USER_CPU_LIMIT": "0.5",
                          "USER_SHM_SIZE": "2G", "USER_PIDS_LIMIT": "300", "SPAWN_TIMEOUT": "45",
                          "SINGLEUSER_IMAGE": "example/img:1"})
    assert c.DockerSpawner.prefix == "lab" and c.DockerSpawner.network_name == "lab-net"
    assert c.DockerSpawner.volumes == {"lab-user-{username}": "/home/jovyan/work"}
    assert c.DockerSpawner.image == "example/img:1"
    assert (c.DockerSpawner.mem_limit, c.DockerSpawner.cpu_limit) == (16 * 2**30, 0.5)
    assert (c.GPUDockerSpawner.shm_size, c.GPUDockerSpawner.pids_limit) == (2 * 2**30, 300)
    # the start timeout allows the wait for memory (HOST_MEMORY_MAX_WAIT, 600 s by default)
    assert (c.Spawner.start_timeout, c.Spawner.http_timeout) == (45 + 600, 45)
    assert c.GPUDockerSpawner.host_memory_when_full == "wait" and c.GPUDockerSpawner.host_memory_reserve == 2**30
    assert "concurrent_starts" not in c.GPUDockerSpawner  # unset: the spawner counts the CPUs
    configure_spawner(c, {"SPAWN_CONCURRENCY": "3"})
    assert c.GPUDockerSpawner.concurrent_starts == 3
    with pytest.raises(ConfigError, match="SPAWN_CONCURRENCY='0'"):
        configure_spawner(Config(), {"SPAWN_CONCURRENCY": "0"})


def test_swarm_backend_selects_the_swarm_spawner_with_its_settings():
    c = Config()
    configure_spawner(c, {"HUB_BACKEND": "swarm", "SWARM_NFS_SERVER": "nfs.lab",
                          "SWARM_CONSTRAINTS": "node.role==worker, node.labels.gpu==true"}, profiles_file="/nonexistent")
    assert c.JupyterHub.spawner_class == "hub.hub_process.spawner.GPUSwarmSpawner"
    assert c.GPUSwarmSpawner.swarm_nfs_server == "nfs.lab" and c.GPUSwarmSpawner.swarm_nfs_export == "/srv/gpuhub"
    assert c.GPUSwarmSpawner.swarm_constraints == ["node.role==worker", "node.labels.gpu==true"]
    assert c.DockerSpawner.network_name == "gpuhub-net"  # the stack's attachable overlay network
    c = Config()
    configure_spawner(c, {}, profiles_file="/nonexistent")
    assert c.JupyterHub.spawner_class == "hub.hub_process.spawner.GPUDockerSpawner" and "GPUSwarmSpawner" not in c
    with pytest.raises(ConfigError, match="HUB_BACKEND"):
        configure_spawner(Config(), {"HUB_BACKEND": "kubernetes"}, profiles_file="/nonexistent")
    # parking works through one host's engine: refused on a Swarm, with the fix in the message
    with pytest.raises(ConfigError, match="GPU_IDLE_ACTION=park needs HUB_BACKEND=docker.*GPU_IDLE_ACTION=stop"):
        configure_spawner(Config(), {"HUB_BACKEND": "swarm", "GPU_IDLE_ACTION": "park"}, profiles_file="/nonexistent")
    configure_spawner(Config(), {"GPU_IDLE_ACTION": "park"}, profiles_file="/nonexistent")  # one host: fine


def test_bad_spawner_setting_stops_with_the_variable_named():
    with pytest.raises(ConfigError, match="USER_MEM_LIMIT='eight'"):
        configure_spawner(Config(), {"USER_MEM_LIMIT": "eight"})


@pytest.mark.parametrize("name", generate.FILES)
def test_generated_file_is_fresh(name):
    """.env.example, docs/configuration.md and compose's hub environment come from the table."""
    expected = generate.outputs(ROOT)[name]
    current = (ROOT / name).read_text() if (ROOT / name).is_file() else None
    assert current == expected, (f"{name} is stale: run `{generate.COMMAND}` ({generate.FULL_COMMAND}) "
                                 f"and commit the result")


def test_stale_files_are_named_with_the_command_that_fixes_them(tmp_path, capsys):
    (tmp_path / "docker-compose.yml").write_text((ROOT / "docker-compose.yml").read_text())
    (tmp_path / "swarm").mkdir()
    (tmp_path / "swarm" / "stack.yml").write_text((ROOT / "swarm" / "stack.yml").read_text())
    (tmp_path / ".env.example").write_text("HUB_PUBLISH=8000\n")
    assert generate.main(["--root", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert ".env.example is stale: run `make config-docs`" in err and "docs/configuration.md is stale" in err
    assert "docker-compose.yml" not in err and "stack.yml" not in err
    assert generate.main(["--root", str(tmp_path), "--write"]) == 0
    assert generate.main(["--root", str(tmp_path)]) == 0


def test_compose_reads_exactly_the_tables_variables_with_its_defaults():
    """Every variable compose reads is in the table, and back; fallbacks are the table's values;
    the hub gets every variable the hub reads."""
    compose_text = (ROOT / "docker-compose.yml").read_text()
    compose = re.findall(r"\$\{([A-Z_]+)(?::-([^}]*))?\}", compose_text)
    in_compose = {name for name, s in SETTINGS.items()  # make's: compose.host.yml; the fixed: set, not read
                  if s.used_by != "make" and not s.internal and name not in generate.COMPOSE_FIXED}
    assert {name for name, _ in compose} == in_compose, ({name for name, _ in compose} ^ in_compose)
    for name, fallback in compose:
        assert fallback == SETTINGS[name].compose_value, (name, fallback)
    hub = re.search(r"^  hub:\n(.*?)^  \S", compose_text, re.MULTILINE | re.DOTALL).group(1)
    hub_env = set(re.findall(r"^      ([A-Z_]+): ", hub, re.MULTILINE))
    assert hub_env == {s.name for s in SETTINGS.values() if s.to_hub}
    example = set(re.findall(r"^([A-Z_]+)=", (ROOT / ".env.example").read_text(), re.MULTILINE))
    assert example == {name for name, s in SETTINGS.items() if not s.internal}
    internal = re.search(r"^## Internal\n(.*?)(^## |\Z)", (ROOT / "docs/configuration.md").read_text(),
                         re.MULTILINE | re.DOTALL).group(1)
    assert set(re.findall(r"^\| `([A-Z_]+)` \|", internal, re.MULTILINE)) == {n for n, s in SETTINGS.items() if s.internal}
    assert all(n.startswith("GPUHUB_") for n, s in SETTINGS.items() if s.internal)


def test_every_setting_has_help_and_a_known_reader():
    for s in SETTINGS.values():
        assert s.help.strip() and s.section in SECTIONS, s.name
        assert s.kind == "compose" or hasattr(readers, s.kind), s.name
        assert (s.kind == "compose") == (s.used_by in ("compose", "make")), s.name
        if s.kind != "compose":
            s.read({})  # the default itself is valid


def test_configure_code_reads_through_the_table():
    """No variable parsed, and no default typed, beside the table: read from the source (ast), the
    hub's configuration reads the environment only through ``read``/``given`` with a row of the
    table, never a reader of its own (hub.settings.readers) or env.get/env[...]/os.environ; only a
    dict comprehension may copy variables, unparsed, into a service's environment."""
    from test_settings import DYNAMIC, env_reads

    for module in ("configure.py", "oauth.py"):
        source = (ROOT / "hub" / "hub_process" / "config" / module).read_text()
        tree = ast.parse(source)
        own = [(line, name) for line, name, passed_on in env_reads(source) if not (name == DYNAMIC and passed_on)]
        assert not own, f"{module} reads these itself: {own}"
        readers_used = [n.lineno for n in ast.walk(tree) if isinstance(n, ast.Name) and n.id == "readers"
                        or isinstance(n, (ast.Import, ast.ImportFrom)) and "readers" in ast.unparse(n)]
        assert not readers_used, f"{module} parses with hub.settings.readers itself (lines {readers_used})"
        names = [call.args[1] for call in ast.walk(tree) if isinstance(call, ast.Call)
                 and isinstance(call.func, ast.Name) and call.func.id in ("read", "given") and len(call.args) == 2]
        assert names, module
        rows = [n.value for n in names if isinstance(n, ast.Constant)]
        assert rows and set(rows) <= set(SETTINGS), (module, set(rows) - set(SETTINGS))


def test_oauth_variables_are_the_oauth_section():
    names = {s.name for s in SETTINGS.values() if s.section is OAUTH}
    assert names == {"OAUTH_PROVIDER", *oauth.VARIABLES}


def test_hub_and_singleuser_pin_the_same_jupyterhub():
    def pin(path):
        return re.search(r"^jupyterhub==(\S+)", (ROOT / path).read_text(), re.MULTILINE).group(1)
    assert pin("images/hub/requirements.txt") == pin("images/singleuser/requirements.txt")


def test_profiles_file_is_checked_at_start(tmp_path):
    good, bad = tmp_path / "good.yaml", tmp_path / "bad.yaml"
    good.write_text("profiles: [{slug: cpu, name: CPU, gpu: false}]")
    bad.write_text("profiles: [{slug: cpu}]")
    c = Config()
    configure_spawner(c, {}, profiles_file=str(good))
    assert c.GPUDockerSpawner.profiles_file == str(good)
    with pytest.raises(ConfigError, match="HUB_PROFILES.*needs a name"):
        configure_spawner(Config(), {}, profiles_file=str(bad))
    c = Config()
    configure_spawner(c, {}, profiles_file=str(tmp_path / "absent.yaml"))
    assert "profiles_file" not in c.GPUDockerSpawner


def test_culler_is_a_least_privilege_service():
    c = Config()
    configure_culler(c, {"CULL_IDLE_TIMEOUT": "600", "CULL_MAX_AGE": "86400", "CULL_EVERY": "30"})
    (service,) = c.JupyterHub.services
    assert service["name"] == "idle-culler"
    assert service["command"][-3:] == ["--timeout=600", "--max-age=86400", "--cull-every=30"]
    (role,) = c.JupyterHub.load_roles
    assert role["services"] == ["idle-culler"]
    assert set(role["scopes"]) == {"list:users", "read:users:activity", "read:servers", "delete:servers"}


def test_culler_off():
    c = Config()
    configure_culler(c, {"CULL_IDLE_TIMEOUT": "0"})
    assert "services" not in c.JupyterHub
    with pytest.raises(ConfigError, match="CULL_IDLE_TIMEOUT"):
        configure_culler(Config(), {"CULL_IDLE_TIMEOUT": "-1"})


def test_swarm_volumes_come_from_one_place():
    with pytest.raises(ConfigError, match="set one of the two"):
        configure_spawner(Config(), {"HUB_BACKEND": "swarm", "SWARM_NFS_SERVER": "nfs", "SWARM_VOLUME_ROOT": "/mnt/x"},
                          profiles_file="/nonexistent")
    with pytest.raises(ConfigError, match="absolute path"):
        configure_spawner(Config(), {"HUB_BACKEND": "swarm", "SWARM_VOLUME_ROOT": "mnt"}, profiles_file="/nonexistent")
    c = Config()
    configure_spawner(c, {"HUB_BACKEND": "swarm", "SWARM_VOLUME_ROOT": "/mnt/gpuhub"}, profiles_file="/nonexistent")
    assert c.GPUSwarmSpawner.swarm_volume_root == "/mnt/gpuhub"


def test_per_user_origins_route_by_host_and_keep_the_internal_names_working():
    from traitlets.config import Config

    from hub.hub_process.config.configure import configure_origins

    c = Config()
    configure_origins(c, {})
    assert "subdomain_host" not in c.JupyterHub  # plain HTTP: one origin
    configure_origins(c, {"HUB_SUBDOMAIN_HOST": "https://hub.lan:18443"})
    assert c.JupyterHub.subdomain_host == "https://hub.lan:18443"
    # users' servers reach gpu-reclaim, and gpuhub-gpus the console, by the proxy's internal name
    assert c.Proxy.extra_routes == {"proxy/services/gpu-console/": "http://hub:10101",
                                    "proxy/services/gpu-reclaim/": "http://hub:10102"}


def test_the_start_timeout_allows_every_wait_whatever_the_order():
    """SPAWN_TIMEOUT, plus the longest wait for memory, plus the longest wait in line for a GPU."""
    from hub.hub_process.config.configure import configure_queue
    env = {"SPAWN_TIMEOUT": "60", "GPU_WHEN_FULL": "queue", "GPU_QUEUE_MAX_WAIT": "900", "HOST_MEMORY_MAX_WAIT": "120"}
    for calls in ((configure_spawner, configure_queue), (configure_queue, configure_spawner)):
        c = Config()
        for call in calls:
            call(c, env)
        assert c.Spawner.start_timeout == 60 + 900 + 120
    c = Config()
    configure_spawner(c, {"SPAWN_TIMEOUT": "60", "HOST_MEMORY_WHEN_FULL": "off"})
    assert c.Spawner.start_timeout == 60
