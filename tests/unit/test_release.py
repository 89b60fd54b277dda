"""The release's version: one place (hub/__init__.py), read by pyproject.toml, stamped into the
images' default tags and version labels, shown by `gpuhub-gpus --version` and the hub's pages."""
import re
import tomllib
from pathlib import Path

import pytest

from hub import __version__
from hub.settings import generate
from hub.hub_process.config.configure import TEMPLATES_DIR, configure_hub
from hub.settings.table import SETTINGS
from hub.service_process.console import cli

ROOT = Path(__file__).resolve().parents[2]
SEMVER = re.compile(r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(-[0-9A-Za-z.-]+)?$")
TAGGED = {"HUB_IMAGE": "gpuhub/hub", "PROXY_IMAGE": "gpuhub/proxy", "SINGLEUSER_IMAGE": "gpuhub/pytorch-notebook",
          "CADDY_IMAGE": "gpuhub/caddy", "PROMETHEUS_IMAGE": "gpuhub/prometheus"}


def test_the_version_is_semantic_and_pyproject_reads_it():
    assert SEMVER.match(__version__), __version__
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "version" not in project["project"] and "version" in project["project"]["dynamic"]
    assert project["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "hub.__version__"}


def test_image_tags_are_the_release_and_env_example_leaves_them_blank():
    """A tag written into .env would outlive the release: the next upgrade would build the new
    code under the old tag, and the old images would be gone for a rollback."""
    assert {name for name, s in SETTINGS.items() if s.tagged} == set(TAGGED)
    example = (ROOT / ".env.example").read_text()
    for name, repository in TAGGED.items():
        assert SETTINGS[name].default == f"{repository}:{__version__}"
        assert re.search(rf"^{name}=$", example, re.MULTILINE), name
    compose = (ROOT / "docker-compose.yml").read_text()
    for name, repository in TAGGED.items():
        assert f"${{{name}:-{repository}:{__version__}}}" in compose, name
    assert "0.1.0" not in compose
    # every image compose builds is labelled with the release
    builds = compose.count("    build:\n")
    assert compose.count(f'GPUHUB_VERSION: "{__version__}"') == builds == 5


def test_stamp_replaces_an_old_release_in_image_lines_and_build_arguments():
    old = ('    image: ${HUB_IMAGE:-gpuhub/hub:0.9.0}\n      args:\n        GPUHUB_VERSION: "0.9.0"  # why\n'
           '    image: ${OTHER_IMAGE:-x:0.9.0}\n')
    assert generate.stamp(old) == (f'    image: ${{HUB_IMAGE:-gpuhub/hub:{__version__}}}\n      args:\n'
                                   f'        GPUHUB_VERSION: "{__version__}"  # why\n'
                                   '    image: ${OTHER_IMAGE:-x:0.9.0}\n')


@pytest.mark.parametrize("dockerfile", sorted((ROOT / "images").glob("*/Dockerfile")), ids=lambda p: p.parent.name)
def test_every_image_carries_the_oci_version_and_revision_labels(dockerfile):
    text = dockerfile.read_text()
    last_stage = text.rsplit("\nFROM ", 1)[-1]
    assert "ARG GPUHUB_VERSION=unknown GPUHUB_REVISION=" in last_stage
    assert 'org.opencontainers.image.version="${GPUHUB_VERSION}"' in last_stage
    assert 'org.opencontainers.image.revision="${GPUHUB_REVISION}"' in last_stage
    # last, so that a new version or commit rebuilds no layer before it
    assert not re.search(r"^(RUN|COPY|ADD) ", text.split("ARG GPUHUB_VERSION", 1)[1], re.MULTILINE)


def test_gpuhub_gpus_version(capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["--version"])
    assert exc.value.code == 0
    assert capsys.readouterr().out.strip() == f"gpuhub-gpus {__version__} (gpuhub)"


def test_hub_pages_get_the_version_and_the_footer_template(tmp_path):
    from traitlets.config import Config
    token = tmp_path / "token"
    token.write_text("t\n")
    c = Config()
    configure_hub(c, {}, proxy_token_file=str(token))
    assert c.JupyterHub.template_vars["gpuhub_version"] == __version__
    assert TEMPLATES_DIR in c.JupyterHub.template_paths
    page = (Path(TEMPLATES_DIR) / "page.html").read_text()
    assert '{% extends "templates/page.html" %}' in page and "{{ gpuhub_version }}" in page


def test_changelog_has_an_unreleased_section_then_this_release_newest_first():
    text = (ROOT / "CHANGELOG.md").read_text()
    headings = re.findall(r"^## (.+)$", text, re.MULTILINE)
    assert headings[0] == "Unreleased"
    releases = [re.match(r"\[([^]]+)\]", h).group(1) for h in headings[1:]]
    assert releases[0] == __version__, "the newest release in CHANGELOG.md is not hub/__init__.py's"
    assert all(SEMVER.match(v) for v in releases)
    as_tuples = [tuple(int(p) for p in v.split("-")[0].split(".")) for v in releases]
    assert as_tuples == sorted(as_tuples, reverse=True)
