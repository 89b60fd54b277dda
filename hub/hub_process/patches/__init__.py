"""Workarounds of JupyterHub bugs and missing hooks, one per module.

Each module says the JupyterHub versions it was written for (``WRITTEN_FOR``) and what
upstream would make it unnecessary (``UPSTREAM``), and ``install()`` refuses to load it on
another version: a JupyterHub upgrade then fails at start, naming the module to re-check,
instead of silently patching code that changed.
"""
from __future__ import annotations

from packaging.specifiers import SpecifierSet
from packaging.version import Version
import jupyterhub


class PatchVersionError(RuntimeError):
    pass


def require(module: str, written_for: str, upstream: str) -> None:
    """Refuse to patch a JupyterHub this workaround was not written for."""

    version = Version(jupyterhub.__version__)
    if version not in SpecifierSet(written_for):
        raise PatchVersionError(
            f"{module} works around JupyterHub {written_for} ({upstream}), and this is JupyterHub "
            f"{version}: check whether the workaround is still needed, then widen its WRITTEN_FOR "
            "or delete the module and its install() call")
