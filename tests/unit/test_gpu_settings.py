import pytest
from traitlets.config import Config
from traitlets.config.loader import ConfigError

from hub.settings.gpu_settings import ENV, GPUSettings
from hub.hub_process.config.configure import configure_console, configure_spawner


def test_defaults_when_nothing_is_set():
    s = GPUSettings.from_env({})
    assert s == GPUSettings()
    assert s.intent_file == "/srv/jupyterhub/state/gpu-intent.json"
    assert s.audit_file == "/srv/jupyterhub/state/gpu-audit.jsonl"
    assert s.cdi_dirs == ("/etc/cdi", "/var/run/cdi") and s.inventory_file == ""
    assert (s.request_style, s.label_prefix, s.name_prefix) == ("auto", "gpuhub", "gpuhub")
    assert (s.usage_interval, s.course_check_interval, s.log_level) == (10.0, 60.0, "INFO")


def test_round_trip_through_the_environment():
    s = GPUSettings(name_prefix="lab", intent_file="/x/i.json", audit_file="/x/a.jsonl",
                    request_style="cdi", label_prefix="lbl", cdi_dirs=["/a", "/b"],
                    inventory_file="/x/gpus.yaml", log_level="debug", usage_interval=2.5,
                    course_check_interval=30, bind="127.0.0.1")
    env = s.to_env()
    assert set(env) == set(ENV.values()) and all(isinstance(v, str) for v in env.values())
    assert env["GPUHUB_GPU_CDI_DIRS"] == "/a:/b" and env["GPUHUB_CONSOLE_LOG_LEVEL"] == "DEBUG"
    back = GPUSettings.from_env({**env, "JUPYTERHUB_API_URL": "http://hub:8081/hub/api"})
    assert back == GPUSettings(**{**s.__dict__, "log_level": "DEBUG"})


@pytest.mark.parametrize("name,raw,match", [
    ("GPUHUB_GPU_REQUEST_STYLE", "amd", r"GPUHUB_GPU_REQUEST_STYLE='amd' is not one of auto, cdi, nvidia"),
    ("HUB_NAME_PREFIX", "Bad Name", r"HUB_NAME_PREFIX='Bad Name' cannot prefix Docker names"),
    ("GPUHUB_USAGE_INTERVAL", "soon", r"GPUHUB_USAGE_INTERVAL='soon' is not a number of seconds.*=10"),
    ("GPUHUB_COURSE_CHECK_INTERVAL", "0", r"GPUHUB_COURSE_CHECK_INTERVAL='0' is not a number of seconds.*=60"),
    ("GPUHUB_CONSOLE_LOG_LEVEL", "chatty", r"GPUHUB_CONSOLE_LOG_LEVEL='CHATTY' is not a log level"),
    ("CONSOLE_ROSTER_MAX_SIZE", "lots", r"CONSOLE_ROSTER_MAX_SIZE='lots' is not a size"),
    ("CONSOLE_ROSTER_MAX_SIZE", "1G", r"CONSOLE_ROSTER_MAX_SIZE='1G' is out of range: use a size from 4K to 64M"),
    ("CONSOLE_ROSTER_MAX_SIZE", "100", r"CONSOLE_ROSTER_MAX_SIZE='100' is out of range"),
])
def test_bad_values_name_the_variable(name, raw, match):
    with pytest.raises(ConfigError, match=match):
        GPUSettings.from_env({name: raw})


def test_the_roster_limit_reaches_the_console(tmp_path):
    from traitlets.config import Config

    from hub.hub_process.config.configure import configure_console, configure_spawner
    c = Config()
    configure_spawner(c, {})
    configure_console(c, {"CONSOLE_ROSTER_MAX_SIZE": "4M"}, reclaim_token_file=str(tmp_path / "token"))
    (console,) = c.JupyterHub.services
    assert GPUSettings.from_env(console["environment"]).roster_max_bytes == 4 * 2**20
    assert GPUSettings().roster_max_bytes == 2**20


def test_configure_console_writes_the_spawners_gpu_settings(tmp_path):
    c = Config()
    configure_spawner(c, {"HUB_NAME_PREFIX": "lab", "GPU_REQUEST_STYLE": "nvidia"})
    c.GPUDockerSpawner.gpu_cdi_dirs = ["/cdi"]
    c.GPUDockerSpawner.gpu_inventory_file = "/srv/gpus.yaml"
    c.GPUDockerSpawner.label_prefix = "lbl"
    configure_console(c, {"HUB_NAME_PREFIX": "lab", "HUB_LOG_LEVEL": "debug"}, reclaim_token_file=str(tmp_path / "token"))
    (console,) = c.JupyterHub.services
    assert GPUSettings.from_env(console["environment"]) == GPUSettings(
        name_prefix="lab", request_style="nvidia", cdi_dirs=("/cdi",), label_prefix="lbl",
        inventory_file="/srv/gpus.yaml", log_level="DEBUG")


def test_internal_rows_default_to_what_the_hub_passes_on():
    """The internal copies of a deployment variable start from the same default."""
    from hub.settings.table import SETTINGS, given

    assert SETTINGS["GPUHUB_GPU_REQUEST_STYLE"].default == SETTINGS["GPU_REQUEST_STYLE"].default
    assert SETTINGS["GPUHUB_GPU_REQUEST_STYLE"].choices == SETTINGS["GPU_REQUEST_STYLE"].choices
    assert SETTINGS["GPUHUB_CONSOLE_LOG_LEVEL"].default == SETTINGS["HUB_LOG_LEVEL"].default
    assert GPUSettings.from_env({"GPUHUB_STATE_DIR": "/x"}).usage_db == "/x/gpu-usage.sqlite"
    assert GPUSettings.from_env({"GPUHUB_STATE_DIR": "/x", "GPUHUB_USAGE_DB": "/y.sqlite"}).usage_db == "/y.sqlite"
    # set: not blank, and for a yes/no setting not a no (a bad value counts as set)
    assert [given({"OAUTH_ALLOW_ALL": v}, "OAUTH_ALLOW_ALL") for v in ("", " ", "no", "False", "yes", "maybe")] == \
        [False, False, False, False, True, True]
    assert given({"OIDC_ISSUER": "x"}, "OIDC_ISSUER") and not given({}, "OIDC_ISSUER")
