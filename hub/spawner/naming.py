"""Docker-safe, collision-free names for any JupyterHub username.

Container and volume names must match ``[a-zA-Z0-9][a-zA-Z0-9_.-]*`` and stay short enough
for the engine's paths. A username that is already a short, lowercase DNS label is used as
it is; anything else (dots, '@', unicode, uppercase, 200 characters, '../') becomes a
readable stem plus '---' plus a hash of the exact username. Plain names never contain '--',
so a hashed name can never equal a plain one, and two different usernames only share a
hashed name if their SHA-256 prefixes collide.
"""
import hashlib
import re

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
