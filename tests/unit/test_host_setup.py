"""`make up`'s host setup (hub/settings/host_setup.py): TLS settings checked with a message naming
the variable, NVIDIA hosts told from this machine's fake GPUs, the generated compose file."""
import json
from pathlib import Path

import pytest

from hub.settings import host_setup
from hub.settings.host_setup import SetupError, cdi_names_real_nvidia, plan, tls_plan

# /etc/cdi/fake-nvidia.yaml as shared/engine/fake-gpus.sh writes it (devices mapped onto /dev/null)
FAKE_SPEC = """cdiVersion: "0.6.0"
kind: nvidia.com/gpu
devices:
- name: GPU-fa4e0000-0000-4000-8000-000000000000
  containerEdits:
    env: [FAKE_GPU_UUID=GPU-fa4e0000-0000-4000-8000-000000000000]
    deviceNodes: [{path: /dev/nvidia0, hostPath: /dev/null}]
"""
# The shape of `nvidia-ctk cdi generate` output (trimmed)
REAL_SPEC = """cdiVersion: 0.5.0
containerEdits:
  deviceNodes:
  - path: /dev/nvidiactl
  - path: /dev/nvidia-uvm
devices:
- containerEdits:
    deviceNodes:
    - path: /dev/nvidia0
  name: GPU-8a1d2c9e-0000-0000-0000-000000000000
kind: nvidia.com/gpu
"""


def real_devices(path):
    return path.startswith("/dev/nvidia")


def test_fake_gpu_spec_is_not_an_nvidia_host_and_a_real_one_is():
    assert not cdi_names_real_nvidia(FAKE_SPEC, real_devices)  # /dev/null is not an NVIDIA device
    assert cdi_names_real_nvidia(REAL_SPEC, real_devices)
    assert not cdi_names_real_nvidia(REAL_SPEC.replace("nvidia.com/gpu", "amd.com/gpu"), real_devices)
    json_spec = json.dumps({"cdiVersion": "0.6.0", "kind": "nvidia.com/gpu",
                            "devices": [{"name": "0", "containerEdits": {"deviceNodes": [{"path": "/dev/nvidia0"}]}}]})
    assert cdi_names_real_nvidia(json_spec, real_devices)


def test_this_machine_is_not_an_nvidia_host(tmp_path):
    """This test machine's /etc/cdi holds only the fake spec: no NVML override may be written."""
    (tmp_path / "fake-nvidia.yaml").write_text(FAKE_SPEC)
    assert host_setup.nvidia_host(cdi_dirs=[str(tmp_path)]) == ""
    assert host_setup.nvidia_host(cdi_dirs=[str(tmp_path)], is_device=real_devices) == ""
    (tmp_path / "nvidia.yaml").write_text(REAL_SPEC)
    assert "nvidia.yaml" in host_setup.nvidia_host(cdi_dirs=[str(tmp_path)], is_device=real_devices)


@pytest.mark.parametrize("domain", ["https://hub.example.org", "hub.example.org:443", "hub.example.org/x",
                                    "10.0.0.5", "-bad-.example.org", "hub..example.org", "hub_1.example.org"])
def test_bad_hub_domain_names_the_variable(domain):
    with pytest.raises(SetupError, match="HUB_DOMAIN="):
        tls_plan({"HUB_DOMAIN": domain})


def test_tls_modes(tmp_path):
    assert tls_plan({}) == {}
    assert tls_plan({"HUB_DOMAIN": "hub.example.org"})["mode"] == "acme"
    assert tls_plan({"HUB_DOMAIN": "gpu.lan"})["mode"] == "internal"
    assert tls_plan({"HUB_DOMAIN": "hub.corp.internal"})["mode"] == "internal"
    assert tls_plan({"HUB_DOMAIN": "hub.example.org", "TLS_ISSUER": "internal"})["mode"] == "internal"
    with pytest.raises(SetupError, match="TLS_ISSUER=acme"):
        tls_plan({"HUB_DOMAIN": "gpu.lan", "TLS_ISSUER": "acme"})
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.write_text("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n")
    key.write_text("-----BEGIN PRIVATE KEY-----\nMIIE\n-----END PRIVATE KEY-----\n")
    files = tls_plan({"HUB_DOMAIN": "gpu.lan", "TLS_CERT_FILE": str(cert), "TLS_KEY_FILE": str(key)})
    assert files == {"domain": "gpu.lan", "mode": "files", "cert": str(cert), "key": str(key)}


@pytest.mark.parametrize("env, variable", [
    ({"TLS_CERT_FILE": "/nonexistent/cert.pem", "TLS_KEY_FILE": "/nonexistent/key.pem"}, "TLS_CERT_FILE"),
    ({"TLS_CERT_FILE": "CERT"}, "TLS_KEY_FILE"),
    ({"TLS_CERT_FILE": "KEY", "TLS_KEY_FILE": "KEY"}, "TLS_CERT_FILE"),  # a key where the cert should be
    ({"TLS_CERT_FILE": "CERT", "TLS_KEY_FILE": "CERT"}, "TLS_KEY_FILE"),
])
def test_bad_certificate_settings_name_the_variable(tmp_path, env, variable):
    (tmp_path / "CERT").write_text("-----BEGIN CERTIFICATE-----\n")
    (tmp_path / "KEY").write_text("-----BEGIN EC PRIVATE KEY-----\n")
    env = {k: (str(tmp_path / v) if v in ("CERT", "KEY") else v) for k, v in env.items()}
    with pytest.raises(SetupError, match=f"^{variable}"):
        tls_plan({"HUB_DOMAIN": "gpu.lan", **env})
    with pytest.raises(SetupError, match="HUB_DOMAIN is not"):
        tls_plan({"TLS_CERT_FILE": "x", "TLS_KEY_FILE": "y"})


def test_generated_compose_file_and_exports(tmp_path, monkeypatch):
    monkeypatch.setattr(host_setup, "nvidia_host", lambda cdi_dirs=(): "")
    out = tmp_path / "compose.host.yml"
    exports, notes = plan({}, out)
    assert exports["COMPOSE_PROFILES"] == "" and exports["COMPOSE_FILE"].startswith("docker-compose.yml:")
    assert json.loads(out.read_text().split("\n", 1)[1]) == {"services": {}}

    monkeypatch.setattr(host_setup, "nvidia_host", lambda cdi_dirs=(): "nvidia-smi lists GPUs")
    exports, notes = plan({"HUB_DOMAIN": "gpu.lan", "NVIDIA_CTK_VERSION": "1.17.8"}, out)
    text = out.read_text()
    assert '"ports": !reset []' in text  # the proxy is no longer published
    assert '"PROXY_BEHIND_TLS": "1"' in text  # Caddy's X-Forwarded-Proto reaches the hub unchanged
    compose = json.loads(text.split("\n", 1)[1].replace("!reset ", ""))
    # the internal CA certifies the wildcard: users' servers on <user>.gpu.lan
    assert compose["services"]["caddy"]["environment"] == {"CADDY_TLS": "internal", "CADDY_SUBDOMAINS": "1"}
    assert compose["services"]["proxy"]["environment"]["PROXY_HOST_ROUTING"] == "1"
    hub = compose["services"]["hub"]
    assert hub["environment"]["HUB_SUBDOMAIN_HOST"] == "https://gpu.lan"
    device = hub["deploy"]["resources"]["reservations"]["devices"][0]
    assert device.get("capabilities") in (["utility"], ["gpu"]) and hub["environment"]["NVIDIA_DRIVER_CAPABILITIES"] == "utility"
    assert exports["COMPOSE_PROFILES"] == "tls" and exports["NVIDIA_CTK_VERSION"] == "1.17.8"
    assert any("NVML" in n for n in notes) and any("HTTPS for gpu.lan" in n for n in notes)

    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.write_text("-----BEGIN CERTIFICATE-----\n")
    key.write_text("-----BEGIN PRIVATE KEY-----\n")
    plan({"HUB_DOMAIN": "gpu.lan", "TLS_CERT_FILE": str(cert), "TLS_KEY_FILE": str(key)}, out)
    caddy = json.loads(out.read_text().split("\n", 1)[1].replace("!reset ", ""))["services"]["caddy"]
    assert caddy["environment"] == {"CADDY_TLS": "files"} and caddy["user"] == "0:0"
    assert caddy["volumes"] == [f"{cert}:/run/tls/cert.pem:ro", f"{key}:/run/tls/key.pem:ro"]

    assert any("<user>.gpu.lan" in n for n in notes)

    exports, _ = plan({"HUB_NVML": "false"}, out)
    assert "hub" not in json.loads(out.read_text().split("\n", 1)[1])["services"]
    with pytest.raises(SetupError, match="HUB_NVML="):
        plan({"HUB_NVML": "maybe"}, out)


def test_main_prints_exports_or_the_error(tmp_path, capsys, monkeypatch):
    env_file = tmp_path / "x.env"
    env_file.write_text("HUB_DOMAIN=https://hub.example.org\n")
    monkeypatch.delenv("HUB_DOMAIN", raising=False)
    assert host_setup.main(["--env-file", str(env_file), "--out", str(tmp_path / "o.yml")]) == 1
    assert "HUB_DOMAIN='https://hub.example.org' is not a host name" in capsys.readouterr().err
    env_file.write_text("HUB_DOMAIN=hub.example.org\n")
    assert host_setup.main(["--env-file", str(env_file), "--out", str(tmp_path / "o.yml")]) == 0
    assert "export COMPOSE_PROFILES='tls'" in capsys.readouterr().out


def test_swarm_exports_every_variable_quoted_the_port_and_a_config_version(tmp_path, monkeypatch):
    (tmp_path / "jupyterhub_config.py").write_text("c = 1\n")
    (tmp_path / "profiles.yaml").write_text("profiles: []\n")
    env = {"HUB_PUBLISH": "127.0.0.1:8443", "TORCH_PACKAGES": "torch==2 torchvision==0"}
    monkeypatch.delenv("HUB_PUBLISH", raising=False)
    exports = host_setup.swarm_exports(env, tmp_path)
    assert exports["HUB_PUBLISH_PORT"] == "8443" and exports["TORCH_PACKAGES"] == "torch==2 torchvision==0"
    assert exports["HUB_PROFILES_FILE"] == str(tmp_path / "profiles.yaml")
    version = exports["HUB_CONFIG_VERSION"]
    (tmp_path / "jupyterhub_config.py").write_text("c = 2\n")
    assert host_setup.swarm_exports(env, tmp_path)["HUB_CONFIG_VERSION"] != version
    monkeypatch.setenv("HUB_PUBLISH", "9000")  # the shell wins, as for compose
    assert host_setup.swarm_exports(env, tmp_path)["HUB_PUBLISH_PORT"] == "9000"


def test_per_user_origins_only_where_a_wildcard_can_be_certified():
    internal = {"domain": "hub.lan", "mode": "internal"}
    assert host_setup.subdomain_host({}, internal) == "https://hub.lan"
    assert host_setup.subdomain_host({"HTTPS_PUBLISH": "127.0.0.1:18443"}, internal) == "https://hub.lan:18443"
    assert host_setup.subdomain_host({"USER_SUBDOMAINS": "false"}, internal) == ""
    acme = {"domain": "hub.example.org", "mode": "acme"}
    assert host_setup.subdomain_host({}, acme) == ""  # auto: no wildcard by HTTP challenge
    with pytest.raises(SetupError, match="USER_SUBDOMAINS=true with ACME"):
        host_setup.subdomain_host({"USER_SUBDOMAINS": "true"}, acme)
    files = {"domain": "hub.example.org", "mode": "files", "cert": "/c.pem"}
    wildcard = lambda path: {"hub.example.org", "*.hub.example.org"}
    plain = lambda path: {"hub.example.org"}
    assert host_setup.subdomain_host({}, files, cert_names=wildcard) == "https://hub.example.org"
    assert host_setup.subdomain_host({}, files, cert_names=plain) == ""
    with pytest.raises(SetupError, match=r"does not name \*.hub.example.org"):
        host_setup.subdomain_host({"USER_SUBDOMAINS": "true"}, files, cert_names=plain)
    with pytest.raises(SetupError, match="needs HTTPS"):
        host_setup.subdomain_host({"USER_SUBDOMAINS": "true"}, {})
    with pytest.raises(SetupError, match="USER_SUBDOMAINS='maybe'"):
        host_setup.subdomain_host({"USER_SUBDOMAINS": "maybe"}, internal)
