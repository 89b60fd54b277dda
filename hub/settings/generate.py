"""Writes the files generated from the settings table (hub/settings/table.py):

  .env.example           every variable but the internal ones, by section, with its help as comments
  docs/configuration.md  the configuration reference: a table per section (the internal ones last)
  docker-compose.yml     the hub service's environment list, between two marker comments
  swarm/stack.yml        the same list for the Swarm stack (HUB_BACKEND fixed to swarm)

and, in both compose files, this release's image tags (the `image:` lines' fallbacks) and the
images' version label (the GPUHUB_VERSION build arguments), from hub/__init__.py.

    python -m hub.settings.generate --write   # or: make config-docs
    python -m hub.settings.generate           # exit 1, naming the stale files (what the unit test checks)
"""
from __future__ import annotations

import argparse
import re
import sys
import textwrap
from pathlib import Path

from hub import __version__
from hub.settings.table import SECTIONS, SETTINGS, Section, Setting

ROOT = Path(__file__).resolve().parents[2]
COMMAND = "make config-docs"
FULL_COMMAND = "python -m hub.settings.generate --write"
ENV_EXAMPLE, DOCS, COMPOSE, STACK = ".env.example", "docs/configuration.md", "docker-compose.yml", "swarm/stack.yml"
FILES = (ENV_EXAMPLE, DOCS, COMPOSE, STACK)
# What each file sets whatever .env says: the compose stack runs servers on its host, the Swarm stack on the swarm
COMPOSE_FIXED, STACK_FIXED = {"HUB_BACKEND": "docker"}, {"HUB_BACKEND": "swarm"}
WIDTH = 96
COMPOSE_INDENT = " " * 6
COMPOSE_BEGIN = f"{COMPOSE_INDENT}# Generated from hub/settings/table.py by `{COMMAND}`: edit the table, not this list."
COMPOSE_END = f"{COMPOSE_INDENT}# (end of the generated list)"


def settings_of(section: Section) -> list[Setting]:
    return [s for s in SETTINGS.values() if s.section is section]


def in_env_file(section: Section) -> list[Setting]:
    """What .env.example shows of a section: no internal variable (the hub sets those itself)."""
    return [s for s in settings_of(section) if not s.internal]


def plain(markdown: str) -> str:
    """Help text for a comment: links become "docs/page.md" (or "title in docs/page.md" for a
    part of a page), code loses its backticks."""
    text = re.sub(r"\[([^]]+)\]\(([^)#]+)#[^)]*\)", r"\1 in docs/\2", markdown)
    text = re.sub(r"\[([^]]+)\]\(([^)#]+)\)", r"docs/\2", text)
    return text.replace("`", "")


def comment(text: str) -> list[str]:
    return textwrap.wrap(plain(text), WIDTH - 2, initial_indent="# ", subsequent_indent="# ",
                         break_long_words=False, break_on_hyphens=False)


def env_example() -> str:
    lines = [
        "# Copy to .env (`make up` does it on first run) and edit. Every line is optional: the defaults",
        "# give a working hub on a host with no GPU and no OAuth app. docs/configuration.md explains each",
        f"# variable. Generated from hub/settings/table.py by `{COMMAND}`: edit the table, not this",
        "# file.",
    ]
    for section in SECTIONS:
        if not in_env_file(section):
            continue
        lines += ["", f"# --- {section.title} ".ljust(WIDTH, "-"), *comment(section.intro), ""]
        for s in in_env_file(section):
            lines += [*comment(s.help), f"{s.name}={s.value}"]
    return "\n".join(lines) + "\n"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _default(s: Setting) -> str:
    if s.default_doc:
        return s.default_doc
    return f"`{s.default}`" if s.default else "(empty)"


def docs() -> str:
    out = [
        "# Configuration reference",
        "",
        f"<!-- Generated from hub/settings/table.py by `{COMMAND}`: edit the table, not this page. -->",
        "",
        "Everything is set in `.env`, which `make up` copies from `.env.example` on first run. Every",
        "variable is optional: the defaults give a working hub on a host with no GPU and no OAuth app.",
        "docker compose passes the hub's variables into its container; a bad value stops the hub at",
        "start with a message naming the variable and an example of a good one.",
        "",
        f"This page is generated from the settings table in `hub/settings/table.py` by `{COMMAND}`",
        f"(`{FULL_COMMAND}`), which also writes `.env.example` and the hub's",
        "environment list in `docker-compose.yml`; a unit test fails when one of them is stale.",
    ]
    for section in SECTIONS:
        out += ["", f"## {section.title}", "", section.intro, "",
                "| Variable | Default | Description |", "| --- | --- | --- |"]
        for s in settings_of(section):
            description = s.help + (f" Example: `{s.example}`." if s.example else "")
            out.append(f"| `{s.name}` | {_cell(_default(s))} | {_cell(description)} |")
    return "\n".join(out) + "\n"


def compose_environment(fixed: dict[str, str] | None = None) -> list[str]:
    fixed = fixed or {}
    lines = []
    for section in SECTIONS:
        hub = [s for s in settings_of(section) if s.to_hub]
        if hub:
            lines.append(f"{COMPOSE_INDENT}# {section.title}")
        for s in hub:
            if any(bad in s.value for bad in ("$", "}", " #")):
                raise ValueError(f"{s.name}: {s.value!r} cannot be a compose fallback value")
            value = fixed.get(s.name, f"${{{s.name}:-{s.compose_value}}}")
            lines.append(f"{COMPOSE_INDENT}{s.name}: {value}")
    return lines


def stamp(text: str) -> str:
    """``text`` with every fallback of a release tag (``${HUB_IMAGE:-gpuhub/hub:…}``) and every
    ``GPUHUB_VERSION:`` build argument set to this release's."""
    for s in SETTINGS.values():
        if s.tagged:
            text = re.sub(r"\$\{%s:-[^}]*\}" % s.name, lambda _, s=s: f"${{{s.name}:-{s.compose_value}}}", text)
    return re.sub(r'^(\s+GPUHUB_VERSION: )"[^"]*"', lambda m: f'{m.group(1)}"{__version__}"', text, flags=re.MULTILINE)


def compose(current: str, name: str = COMPOSE, fixed: dict[str, str] | None = None) -> str:
    """``current`` (docker-compose.yml, or ``name``) with the lines between the markers regenerated
    and this release's tags stamped in."""
    lines = stamp(current).split("\n")
    try:
        begin, end = lines.index(COMPOSE_BEGIN), lines.index(COMPOSE_END)
    except ValueError:
        raise ValueError(f"{name} lacks the marker lines of the hub's environment list:\n"
                         f"{COMPOSE_BEGIN}\n{COMPOSE_END}") from None
    return "\n".join([*lines[:begin + 1], *compose_environment(fixed), *lines[end:]])


def outputs(root: Path = ROOT) -> dict[str, str]:
    """Each generated file's path (relative to ``root``) and the content it should have."""
    return {ENV_EXAMPLE: env_example(), DOCS: docs(), COMPOSE: compose((root / COMPOSE).read_text(), COMPOSE, COMPOSE_FIXED),
            STACK: compose((root / STACK).read_text(), STACK, STACK_FIXED)}


def stale(root: Path = ROOT) -> list[str]:
    def current(path: Path) -> str | None:
        return path.read_text() if path.is_file() else None
    return [name for name, text in outputs(root).items() if current(root / name) != text]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hub.settings.generate", description=__doc__.split("\n")[0])
    parser.add_argument("--write", action="store_true", help="write the files (default: only check them)")
    parser.add_argument("--root", type=Path, default=ROOT, help="the checkout (default: %(default)s)")
    args = parser.parse_args(argv)
    if args.write:
        for name, text in outputs(args.root).items():
            path = args.root / name
            if not path.is_file() or path.read_text() != text:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(text)
                print(f"wrote {name}")
        return 0
    names = stale(args.root)
    for name in names:
        print(f"{name} is stale: run `{COMMAND}` ({FULL_COMMAND})", file=sys.stderr)
    return 1 if names else 0


if __name__ == "__main__":
    sys.exit(main())
