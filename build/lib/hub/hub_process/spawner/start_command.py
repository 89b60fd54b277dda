"""The command a user's server starts with.

An image may name a leaner start command than its CMD in a label
(images/singleuser/gpuhub_singleuser.py: jupyterhub-singleuser without the hub's database
layer); server extensions the image does not need are switched off by argument."""
from __future__ import annotations

# Image label naming a leaner start command than the image's CMD
SINGLEUSER_COMMAND_LABEL = "gpuhub.singleuser-command"


def image_command(image_config: dict) -> list[str]:
    """The label's command if the image names one, else its CMD (``inspect_image``'s Config)."""
    command = (image_config.get("Labels") or {}).get(SINGLEUSER_COMMAND_LABEL)
    return [command] if command else list(image_config["Cmd"])


def extensions_off_argument(names: list[str]) -> list[str]:
    """The server argument that leaves these Jupyter server extensions unloaded."""
    if not names:
        return []
    off = {name: False for name in names}
    return [f"--ServerApp.jpserver_extensions={off!r}"]
