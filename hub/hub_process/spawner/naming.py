"""Docker-safe, collision-free names for any JupyterHub username.

Container and volume names must match ``[a-zA-Z0-9][a-zA-Z0-9_.-]*`` and stay short enough
for the engine's paths. A username that is already a short, lowercase DNS label is used as
it is; anything else (dots, '@', unicode, uppercase, 200 characters, '../') becomes a
readable stem plus '---' plus a hash of the exact username. Plain names never contain '--',
so a hashed name can never equal a plain one, and two different usernames only share a
hashed name if their SHA-256 prefixes collide.

A hub moved from a stock DockerSpawner deployment can keep that deployment's names
(``SCHEMES``: "dockerspawner", escapism's ``-XX`` escapes), so its users' volumes are found
as they are; ``renamed_volumes`` tells which volumes of a user the other scheme would name
differently.
"""
import hashlib
import re
from typing import Callable

from dockerspawner import DockerSpawner

SCHEMES = ("gpuhub", "dockerspawner")

MAX_SLUG_LENGTH = 40
_PLAIN = re.compile(r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?$")
_HASH_CHARS = 8
_STEM_LENGTH = MAX_SLUG_LENGTH - len("---") - _HASH_CHARS


def is_plain(name: str) -> bool:
    """True if the name is used unchanged: lowercase DNS label, no '--', not too long."""
    return len(name) <= MAX_SLUG_LENGTH and "--" not in name and bool(_PLAIN.match(name))


def safe_slug(name: str) -> str:
    """The Docker-safe form of ``name``: the name itself, or ``<stem>---<hash8>``."""
    if is_plain(name):
        return name
    digest = hashlib.sha256(name.encode("utf-8")).hexdigest()[:_HASH_CHARS]
    stem = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")[:_STEM_LENGTH].strip("-")
    return f"{stem}---{digest}" if stem else f"x---{digest}"


def escape_for(scheme: str) -> Callable[[str], str]:
    """The username escaping of a naming scheme."""
    return safe_slug if scheme == "gpuhub" else DockerSpawner._escape


def renamed_volumes(volumes: dict, render: Callable[[object, dict], object], namespace: dict,
                    stock_name: str) -> list[tuple[str, str]]:
    """(stock DockerSpawner's name, this hub's name) of each named volume in ``volumes`` (a
    DockerSpawner ``volumes`` dict) that the two schemes name differently for this user.

    ``render`` is DockerSpawner's ``_render_templates``; ``namespace`` its template namespace."""
    stock = {**namespace, "username": stock_name, "safe_username": stock_name}
    pairs = []
    for source in volumes:
        if not isinstance(source, str) or source.startswith(("/", ".")):
            continue  # a host path: not a named volume
        ours, theirs = render(source, namespace), render(source, stock)
        if ours != theirs:
            pairs.append((theirs, ours))
    return pairs
