"""Nothing periodic in a user's container that nobody needs (docs/performance.md, "Idle servers")."""
import json
import re
from pathlib import Path

IMAGE = Path(__file__).resolve().parents[2] / "images/singleuser"


def test_the_singleuser_image_has_no_healthcheck():
    # The engine would exec a checker process in every container every few seconds.
    assert not re.search(r"^\s*HEALTHCHECK\s", (IMAGE / "Dockerfile").read_text(), re.M)


def test_resource_usage_serves_the_status_bar_without_a_per_second_sampler():
    config = json.loads((IMAGE / "jupyter_server_config.json").read_text())["ResourceUseDisplay"]
    assert config["enable_prometheus_metrics"] is False  # psutil over every process, each second
    assert config["track_cpu_percent"] is True  # the status bar's CPU, computed when asked
