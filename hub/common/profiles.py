"""Server profiles: what a user may start, from a YAML file the admin mounts into the hub.

    profiles:
      - slug: gpu                      # what the form and the API send
        name: PyTorch, 1 GPU, 32 GB
        description: One whole GPU of its own
        gpu: true                      # one exclusive GPU (false: CPU only)
        mem_limit: 32G
        cpu_limit: 8
        images: [gpuhub/pytorch-notebook:1.0.0]   # the allowlist; the first is the default
        groups: [staff]                # only members of these groups see it (absent: everyone)
        default: true
        reclaim: {timeout: 7200, grace: 900}   # its own idle-GPU reclaim (or: reclaim: off; also
                                       # action: park, max_parked: 28800: docs/gpus.md "Parking")
                                       # left out: GPU_IDLE_TIMEOUT/THRESHOLD/GRACE (docs/gpus.md)
        warm_kernel: [torch, numpy]    # the spare kernel's imports (or: warm_kernel: off);
                                       # left out: WARM_KERNEL, WARM_KERNEL_IMPORTS (docs/performance.md)

Users choose a profile (and an image from its list); everything else comes from the file.
Anything else in the user's options, or a profile or image not offered to them, is refused
with HTTP 400 and nothing starts.
"""
import html
import re
from dataclasses import dataclass

import yaml
from tornado import web

from hub.gpus.reclaim_policy import ReclaimOverride, parse_override
from hub.units import parse_cpus, parse_size

_SLUG = re.compile(r"^[a-z0-9][a-z0-9_-]{0,39}$")
_KEYS = {"slug", "name", "description", "gpu", "mem_limit", "cpu_limit", "images", "groups", "default", "reclaim",
         "warm_kernel"}
_MODULE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")
OPTION_KEYS = {"profile", "image"}


@dataclass(frozen=True)
class Profile:
    slug: str
    name: str
    description: str
    gpu: bool
    mem_limit: int
    cpu_limit: float
    images: tuple[str, ...]
    groups: frozenset[str]
    default: bool = False
    reclaim: ReclaimOverride | None = None  # None: the hub's reclaim settings
    warm_kernel: bool | None = None  # None: the hub's WARM_KERNEL
    warm_imports: tuple[str, ...] | None = None  # None: the hub's WARM_KERNEL_IMPORTS

    def visible_to(self, groups: set[str], admin: bool) -> bool:
        return admin or not self.groups or bool(self.groups & groups)


def load_profiles(text: str, default_image: str, default_mem: int, default_cpu: float) -> list[Profile]:
    """Parse and check the profiles file; a ValueError names the profile, the field and the fix."""
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise ValueError(f"profiles file is not valid YAML: {exc}") from None
    entries = data.get("profiles") if isinstance(data, dict) else None
    if not isinstance(entries, list) or not entries:
        raise ValueError("profiles file needs a non-empty list under 'profiles:'")
    profiles = [_profile(i, e, default_image, default_mem, default_cpu) for i, e in enumerate(entries)]
    slugs = [p.slug for p in profiles]
    if len(set(slugs)) != len(slugs):
        raise ValueError(f"profiles: each slug must be unique, got {slugs}")
    if sum(p.default for p in profiles) > 1:
        raise ValueError("profiles: at most one profile may say 'default: true'")
    return profiles


def _profile(i: int, entry, image: str, mem: int, cpu: float) -> Profile:
    where = f"profiles[{i}]"
    if not isinstance(entry, dict):
        raise ValueError(f"{where} must be a mapping with at least slug and name")
    unknown = set(entry) - _KEYS
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {sorted(unknown)}; allowed: {sorted(_KEYS)}")
    slug = str(entry.get("slug", ""))
    if not _SLUG.match(slug):
        raise ValueError(f"{where}: slug {slug!r} must be lowercase letters, digits, '-' or '_' (e.g. gpu-large)")
    where = f"profiles[{i}] ({slug})"
    if not entry.get("name"):
        raise ValueError(f"{where}: needs a name, the text users see")
    images = entry.get("images", [image])
    if not isinstance(images, list) or not images or not all(isinstance(x, str) and x for x in images):
        raise ValueError(f"{where}: images must be a non-empty list of image names")
    groups = entry.get("groups", [])
    if not isinstance(groups, list) or not all(isinstance(g, str) for g in groups):
        raise ValueError(f"{where}: groups must be a list of group names")
    limits = {"mem_limit": (parse_size, mem), "cpu_limit": (parse_cpus, cpu)}
    for key, (parse, default) in limits.items():
        try:
            limits[key] = parse(str(entry[key])) if key in entry else default
        except ValueError as exc:
            raise ValueError(f"{where}: {key}={exc}") from None
    mem_limit, cpu_limit = limits["mem_limit"], limits["cpu_limit"]
    for key in ("gpu", "default"):
        if key in entry and not isinstance(entry[key], bool):
            raise ValueError(f"{where}: {key} must be true or false")
    reclaim = None
    if "reclaim" in entry:
        if not entry.get("gpu", True):
            raise ValueError(f"{where}: reclaim is about idle GPUs; a profile with gpu: false holds none")
        reclaim = parse_override(entry["reclaim"], where)
    warm_kernel, warm_imports = parse_warm_kernel(entry["warm_kernel"], where) if "warm_kernel" in entry else (None, None)
    return Profile(slug, str(entry["name"]), str(entry.get("description", "")), entry.get("gpu", True),
                   mem_limit, cpu_limit, tuple(images), frozenset(groups), entry.get("default", False), reclaim,
                   warm_kernel, warm_imports)


def parse_warm_kernel(value, where: str) -> tuple[bool, tuple[str, ...] | None]:
    """A profile's ``warm_kernel:``: off/false (no spare kernel), on/true (the hub's imports), or
    the modules the spare imports (a list, or one string of names; [] imports nothing)."""
    if isinstance(value, bool) or (isinstance(value, str) and value.strip().lower() in ("on", "off")):
        return (value if isinstance(value, bool) else value.strip().lower() == "on"), None
    names = value.replace(",", " ").split() if isinstance(value, str) else value
    if not isinstance(names, list) or not all(isinstance(n, str) and _MODULE.match(n) for n in names):
        raise ValueError(f"{where}: warm_kernel must be on, off or a list of module names to import "
                         f"(e.g. [torch, numpy]), got {value!r}")
    return True, tuple(names)


def choose(profiles: list[Profile], user_options: dict, groups: set[str], admin: bool) -> tuple[Profile, str]:
    """The profile and image these options ask for, if this user may have them; else HTTP 400."""
    if not isinstance(user_options, dict):
        raise web.HTTPError(400, "server options must be a JSON object")
    unknown = set(user_options) - OPTION_KEYS
    if unknown:
        raise web.HTTPError(400, f"unknown server option(s) {sorted(unknown)}: only 'profile' and 'image' may be chosen")
    visible = [p for p in profiles if p.visible_to(groups, admin)]
    if not visible:
        raise web.HTTPError(403, "no server profile is available to you; ask an admin to add you to a course or group")
    slug = user_options.get("profile")
    if slug is None:
        profile = next((p for p in visible if p.default), visible[0])
    else:
        profile = next((p for p in visible if p.slug == slug), None)
        if profile is None:
            offered = ", ".join(p.slug for p in visible)
            raise web.HTTPError(400, f"profile {str(slug)[:80]!r} is not offered to you (choose one of: {offered})")
    image = user_options.get("image") or profile.images[0]
    if image not in profile.images:
        raise web.HTTPError(400, f"image {str(image)[:120]!r} is not allowed for profile {profile.slug!r} "
                                 f"(allowed: {', '.join(profile.images)})")
    return profile, image


def options_from_form(formdata: dict) -> dict:
    """Form fields (lists of strings) to user options; choose() checks them at start."""
    options = {}
    for key, values in formdata.items():
        if key not in OPTION_KEYS:
            raise web.HTTPError(400, f"unknown form field {key[:40]!r}")
        if len(values) != 1:
            raise web.HTTPError(400, f"form field {key!r} must have exactly one value")
        options[key] = values[0]
    return options


def render_form(profiles: list[Profile], gpus_total: int, gpus_free: int,
                shared_seats: dict[str, tuple[int, int]] | None = None) -> str:
    """The spawn form: one radio button per profile, the free GPUs now (and seats left on shared
    GPUs: uuid -> (seats left, capacity)), images where there is a choice."""
    e = html.escape
    default = next((p for p in profiles if p.default), profiles[0])
    shared_seats = shared_seats or {}
    seats = sum(left for left, _ in shared_seats.values())
    if gpus_total:
        gpu_line = (f'<p class="gpuhub-gpus"><strong>{gpus_free} of {gpus_total}</strong> '
                    f'GPU{"s" if gpus_total != 1 else ""} free right now.')
        if shared_seats:
            capacities = sorted({cap for _, cap in shared_seats.values()})
            gpu_line += (f' <span class="gpuhub-shared">Plus <strong>{seats}</strong> seat{"s" if seats != 1 else ""} on '
                         f'{len(shared_seats)} shared GPU{"s" if len(shared_seats) != 1 else ""} (up to '
                         f'{"/".join(map(str, capacities))} users each): you get one when no whole GPU is free '
                         '(or it is reserved for your course). A shared GPU\'s memory and time are shared '
                         'with the others on it, not isolated.</span>')
        gpu_line += '</p>'
    else:
        gpu_line = '<p class="gpuhub-gpus">This host has no GPUs: servers run on the CPU.</p>'
    rows = []
    for p in profiles:
        checked = " checked" if p is default else ""
        gpu = "1 GPU of its own" if p.gpu and gpus_total else "CPU only"
        limits = f"{gpu}, {p.cpu_limit:g} CPU, {p.mem_limit / 2**30:g} GB memory"
        full = " (none free now)" if p.gpu and gpus_total and not gpus_free and not seats else ""
        images = ""
        if len(p.images) > 1:
            opts = "".join(f'<option value="{e(i)}">{e(i)}</option>' for i in p.images)
            images = f'<select class="form-select form-select-sm mt-1" name="image" data-profile="{e(p.slug)}" disabled>{opts}</select>'
        rows.append(
            f'<div class="form-check mb-3"><input class="form-check-input" type="radio" name="profile" '
            f'id="profile-{e(p.slug)}" value="{e(p.slug)}"{checked}>'
            f'<label class="form-check-label" for="profile-{e(p.slug)}"><strong>{e(p.name)}</strong>'
            f' <small class="text-muted">{e(limits)}{full}</small><br>{e(p.description)}</label>{images}</div>')
    # Only the chosen profile's image list is submitted.
    script = ("<script>(function(){function s(){document.querySelectorAll('select[data-profile]').forEach("
              "function(x){x.disabled=!document.getElementById('profile-'+x.dataset.profile).checked;});}"
              "document.querySelectorAll('input[name=profile]').forEach(function(r){r.addEventListener('change',s);});"
              "s();})();</script>")
    return gpu_line + "".join(rows) + script


def course_profile(profiles: list[Profile], course: str) -> Profile | None:
    """The profile a course's pre-started servers get (hub/gpus/prestart.py): the first in the
    file that names the course's group, one with a GPU first; None when none names it."""
    named = [p for p in profiles if course in p.groups]
    return next((p for p in named if p.gpu), named[0] if named else None)
