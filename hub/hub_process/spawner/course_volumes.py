"""Course materials volumes (hub/courses.py): one per course, ``<prefix>-course-<course>``,
mounted at ``<materials dir>/<course>``: writable for the course's teachers and TAs,
read-only for its students."""
from __future__ import annotations

import asyncio
import logging

from typing import Any, Awaitable, Callable

import docker.errors

from hub import courses
from hub.gpus.claim import Labels

log = logging.getLogger(__name__)

DockerCall = Callable[..., Awaitable]
OWNER = "1000:100"  # the notebook user, jovyan


def user_courses(user: Any) -> dict[str, courses.Course]:
    """course name -> Course, for the courses (groups with course properties) of this user."""
    found = {}
    for group in getattr(user, "groups", []):
        properties = getattr(group, "properties", None) or {}
        if courses.PROPERTY not in properties:
            continue
        course = courses.course_from_group({"name": group.name, "properties": properties,
                                            "users": [u.name for u in getattr(group, "users", [])]})
        if course is not None:
            found[course.name] = course
    return found


def volume_name(prefix: str, course: str) -> str:
    return f"{prefix}-course-{course}"


def mounts(mine: dict[str, courses.Course], username: str, prefix: str, mount_dir: str) -> list[tuple[str, str, bool]]:
    """(volume, target, read-only) of the materials of these courses (course names are
    checked: safe in paths and names)."""
    return [(volume_name(prefix, name), f"{mount_dir}/{name}", username not in course.staff)
            for name, course in sorted(mine.items()) if course.materials]


def binds(mine: dict[str, courses.Course], username: str, prefix: str, mount_dir: str) -> list[str]:
    """Docker binds of the materials of these courses."""
    return [f"{volume}:{target}:{'ro' if read_only else 'rw'}"
            for volume, target, read_only in mounts(mine, username, prefix, mount_dir)]


async def ensure_volumes(mine: dict[str, courses.Course], *, prefix: str, labels: Labels, image: str,
                         engine: DockerCall, host_config: Callable[..., dict],
                         emit: Callable[[int, str], None]) -> None:
    """Create a course's materials volume owned by the notebook user, once: a volume Docker
    creates on first mount would be root's, and its teachers could not write to it.

    ``engine`` calls the engine as it is (no user labels, limits or mounts added);
    ``host_config`` is docker-py's ``create_host_config``."""
    for name, course in sorted(mine.items()):
        if not course.materials:
            continue
        volume = volume_name(prefix, name)
        try:
            await engine("inspect_volume", volume)
            continue
        except docker.errors.NotFound:
            pass
        emit(65, f"Creating the materials volume of course {name}")
        await engine("create_volume", volume, labels={labels.course: name, labels.instance: prefix})
        await as_root(engine, image, ["chown", OWNER, "/materials"],
                      host_config(binds=[f"{volume}:/materials"], **AS_ROOT_HOST_CONFIG),
                      {labels.instance: prefix}, f"prepare the materials volume {volume}")


# A root container that may change owners and nothing else, without a network
AS_ROOT_HOST_CONFIG = {"network_mode": "none", "cap_drop": ["ALL"], "cap_add": ["CHOWN"],
                       "security_opt": ["no-new-privileges=true"]}


async def as_root(engine: DockerCall, image: str, command: list[str], host_config: dict,
                  labels: dict[str, str], what: str, wait_removal: bool = True) -> None:
    """Run `command` as root in a one-off container of `image` (a volume's owner), and wait
    (for its removal too unless ``wait_removal`` is False: then it is removed meanwhile)."""
    created = await engine("create_container", image, command=command, user="root", entrypoint=[],
                           host_config=host_config, labels=labels)
    try:
        await engine("start", created["Id"])
        result = await engine("wait", created["Id"], timeout=60)
        if result.get("StatusCode"):
            raise RuntimeError(f"could not {what} (exit {result['StatusCode']})")
    finally:
        removal = engine("remove_container", created["Id"], force=True)
        if wait_removal:
            await removal
        else:
            asyncio.ensure_future(removal).add_done_callback(_removed)


def _removed(future: "asyncio.Future") -> None:
    if not future.cancelled() and future.exception() is not None:
        log.warning("A one-off container was not removed: %s", future.exception())
