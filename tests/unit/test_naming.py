import string

import pytest

from hub.hub_process.spawner.naming import MAX_SLUG_LENGTH, is_plain, safe_slug

DOCKER_NAME = set(string.ascii_lowercase + string.digits + "-")


@pytest.mark.parametrize("name", ["alice", "bob-2", "a", "x" * MAX_SLUG_LENGTH])
def test_plain_names_are_kept(name):
    assert safe_slug(name) == name


@pytest.mark.parametrize("name", [
    "a.b", "a_b", "Alice", "alice@example.org", "jürgen", "日本語", "../etc", "-lead", "trail-",
    "a--b", "x" * (MAX_SLUG_LENGTH + 1), "u" * 200, "", " ",
])
def test_other_names_are_hashed_bounded_and_docker_safe(name):
    slug = safe_slug(name)
    assert "---" in slug and slug != name
    assert set(slug) <= DOCKER_NAME and slug[0].isalnum()
    assert len(slug) <= MAX_SLUG_LENGTH


def test_names_that_look_alike_do_not_collide():
    lookalikes = ["a.b", "a-b", "a_b", "a@b", "A.b", "a..b", "a.b.", "ä-b", "a—b", "a-b-", "a---b"]
    slugs = [safe_slug(n) for n in lookalikes]
    assert len(set(slugs)) == len(lookalikes), dict(zip(lookalikes, slugs))


def test_hashed_name_never_equals_a_plain_one():
    # A plain name cannot contain '--', every hashed one does.
    assert not is_plain("a---12345678")
    assert safe_slug("a---12345678") != "a---12345678"


def test_slug_is_stable():
    assert safe_slug("alice.smith@example.org") == safe_slug("alice.smith@example.org")
    assert safe_slug("alice.smith@example.org").startswith("alice-smith-example-org---")
