"""The spawn form and the options a user may give (profiles: hub/common/profiles.py), as a part
of GPUDockerSpawner (spawner.py)."""
import time
from pathlib import Path

from dockerspawner import DockerSpawner
from tornado import web
from traitlets import default

from hub.common import profiles
from hub.hub_process.spawner.progress import ProgressLog
from hub.hub_process.spawner.traits import GPUSpawnerSettings


def manager_reconciled_at(manager) -> float:
    """time.monotonic() of the manager's last reconcile; 0 where it keeps none (Swarm's)."""
    return getattr(manager, "reconciled_at", 0.0)


class ProfileForm(GPUSpawnerSettings):
    profile_warm: tuple = (None, None)  # the chosen profile's (warm_kernel, warm_imports); None: the settings

    def user_groups(self) -> set[str]:
        return {g.name for g in getattr(self.user, "groups", [])}

    @property
    def is_admin(self) -> bool:
        return bool(getattr(self.user, "admin", False))

    def load_profiles(self) -> list:
        """The profiles file, read on each use so an admin's edit applies at the next spawn."""
        if not self.profiles_file:
            return []
        image, mem_limit, cpu_limit, _ = self._configured
        return profiles.load_profiles(Path(self.profiles_file).read_text(), image, mem_limit, cpu_limit)

    @default("options_form")
    def _default_options_form(self):
        if not self.profiles_file:  # DockerSpawner's own: a choice of its allowed_images
            return DockerSpawner._default_options_form(self)
        return ProfileForm.render_options_form

    async def render_options_form(self) -> str:
        visible = [p for p in self.load_profiles() if p.visible_to(self.user_groups(), self.is_admin)]
        if len(visible) < 2 and not any(len(p.images) > 1 for p in visible):
            return ""  # nothing to choose: Start starts at once
        total = free = 0
        seats: dict = {}
        if self.gpu_enabled:
            manager = await self.gpu_manager()
            # The form only shows how many GPUs are free; the start decides under the lock after
            # its own reconcile. A reconcile reads every live container (one Docker call each),
            # and in a class of 100 each form view waited for the starts' lock and then made
            # 100 calls: 10 s per form (docs/performance.md). So: the last figures when they
            # are recent or a start holds the lock, a fresh reconcile otherwise.
            if not manager.lock.locked() and time.monotonic() - manager_reconciled_at(manager) > self.form_gpu_fresh:
                async with manager.lock:
                    await manager.reconcile(self.engine)
            groups, now = self.user_groups(), time.time()
            total = len(manager.inventory)
            free = len(manager.allocator.free(self.user.name, groups, now))
            seats = {u: (left, manager.allocator.capacity(u))
                     for u, left in manager.allocator.seats(groups, now).items()}
        return profiles.render_form(visible, total, free, seats)

    @default("options_from_form")
    def _default_options_from_form(self):
        # The trait's default, not a method: c.Spawner.options_from_form stays configurable.
        if not self.profiles_file:  # DockerSpawner's own: the image field
            return DockerSpawner._default_options_from_form(self)
        return self.profile_options_from_form

    def profile_options_from_form(self, formdata):
        """Form fields to options, checked now so a bad or forged form gets its 400 at once."""
        options = profiles.options_from_form(formdata)
        profiles.choose(self.load_profiles(), options, self.user_groups(), self.is_admin)
        return options

    @default("apply_user_options")
    def _default_apply_user_options(self):
        return ProfileForm.apply_profile

    def apply_profile(self, user_options: dict) -> None:
        """Check the user's options against the profiles offered to them and apply the chosen one.

        JupyterHub calls this before every start and turns an HTTPError raised here into that
        status with its message, before anything starts (JupyterHub >= 5.3)."""
        self.progress_log = ProgressLog()  # a new start
        self.profile_slug = None
        self.profile_warm = (None, None)
        offered = self.load_profiles()
        if not offered:  # DockerSpawner's own options: an image of allowed_images (start() checks it)
            others = sorted(set(user_options) - {"image"})
            if others:
                raise web.HTTPError(400, f"this hub offers no server options but 'image' (got {others[:5]})")
            self.image, self.mem_limit, self.cpu_limit, self.gpu_enabled = self._configured
            return
        if self._configured_allowed_images:
            raise web.HTTPError(500, "This hub's configuration sets both server profiles and "
                                     "DockerSpawner.allowed_images; profiles replace allowed_images. An "
                                     "admin must remove c.DockerSpawner.allowed_images and list the images "
                                     "under a profile's 'images:' instead (docs/servers.md).")
        profile, image = profiles.choose(offered, user_options, self.user_groups(), self.is_admin)
        self.profile_slug = profile.slug
        self.profile_warm = (profile.warm_kernel, profile.warm_imports)
        self.image = image
        self.allowed_images = {image: image}  # DockerSpawner re-checks user_options["image"]
        self.mem_limit, self.cpu_limit, self.gpu_enabled = profile.mem_limit, profile.cpu_limit, profile.gpu
        self.emit_progress(5, f"Profile: {profile.name}")
