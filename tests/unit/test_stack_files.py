"""The single-host compose file and the Swarm stack run the same proxy: what its container is
told (command) and how its network namespace is tuned (sysctls, e.g. net.ipv4.tcp_retries2 for
browsers that vanished) must not drift apart when one file is edited."""
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]


def proxy(path: str) -> dict:
    return yaml.safe_load((ROOT / path).read_text())["services"]["proxy"]


def sysctls(service: dict) -> dict[str, str]:
    """Compose accepts a mapping or a list of KEY=VALUE; values compared as strings."""
    raw = service.get("sysctls") or {}
    if isinstance(raw, list):
        raw = dict(item.split("=", 1) for item in raw)
    return {k: str(v) for k, v in raw.items()}


def test_proxy_sysctls_agree():
    compose, stack = proxy("docker-compose.yml"), proxy("swarm/stack.yml")
    assert sysctls(compose), "docker-compose.yml's proxy sets no sysctls"
    assert sysctls(compose) == sysctls(stack)


def test_proxy_tcp_retries2_is_set():
    assert sysctls(proxy("swarm/stack.yml")).get("net.ipv4.tcp_retries2") == "8"


def test_proxy_command_agrees():
    assert proxy("docker-compose.yml")["command"] == proxy("swarm/stack.yml")["command"]


def test_sysctls_reads_both_forms():
    assert sysctls({"sysctls": ["net.ipv4.tcp_retries2=8"]}) == sysctls({"sysctls": {"net.ipv4.tcp_retries2": 8}})
