"""Data: a file written in a session survives stop/start, removal of the container behind the
hub's back, a hub restart, an image upgrade (new tag, server restarted) and a backup and
restore of the user's volume with the commands the README documents (run from the README)."""
import hashlib
import os
import re
import subprocess
import tempfile

import reliability
from consoleclient import user_token, wait_for
from hubclient import ROOT, UserServer

NAME = "data-keeper"
CONTENT = "".join(f"line {i}: {hashlib.sha256(str(i).encode()).hexdigest()}\n" for i in range(2000))


def readme_commands(section: str) -> str:
    """The shell commands of the README's fenced block after '<!-- reliability: section -->'."""
    text = (ROOT / "docs" / "operations.md").read_text()
    match = re.search(rf"<!-- reliability: {section} -->\s*```sh\n(.*?)```", text, re.S)
    assert match, f"README.md lost its '{section}' commands"
    return match.group(1)


class Files:
    """Counts each check of the file: checked, and lost when it is missing or different."""

    def __init__(self, server: UserServer):
        self.server, self.lost = server, []

    def check(self, after: str) -> None:
        try:
            ok = self.server.read_text("keep/data.txt") == CONTENT
        except Exception:
            ok = False
        reliability.add(files_checked=1, **({} if ok else {"files_lost": 1}))
        reliability.detail(file_after=after, intact=ok)
        if not ok:
            self.lost.append(after)


def test_a_file_survives_everything(stack, hub):
    token = user_token(hub, NAME)
    server = UserServer(stack.url, hub.start(NAME, options={"profile": "cpu"})["url"], token)
    r = server.s.put(server.base + "api/contents/keep", json={"type": "directory"}, timeout=30)
    assert r.status_code in (200, 201), r.text
    server.put_text("keep/data.txt", CONTENT)
    files = Files(server)
    upgraded = stack.env["SINGLEUSER_IMAGE"].rsplit(":", 1)[0] + ":reliability-upgrade"
    try:
        hub.stop(NAME)
        hub.start(NAME, options={"profile": "cpu"})
        files.check("stop and start")

        container = stack.container_of(NAME)
        stack.docker("rm", "-f", container)  # behind the hub's back
        wait_for(lambda: not hub.user(NAME)["servers"], timeout=60, what="hub noticing the removal")
        hub.start(NAME, options={"profile": "cpu"})
        files.check("container removed")

        stack.compose("restart", "hub")
        stack.up()
        files.check("hub restart")

        # Image upgrade: a new tag of the single-user image, the hub given it, the server restarted.
        stack.docker("tag", stack.env["SINGLEUSER_IMAGE"], upgraded)
        stack.up(SINGLEUSER_IMAGE=upgraded)
        hub.stop(NAME)
        hub.start(NAME, options={"profile": "cpu"})
        assert stack.inspect(stack.container_of(NAME))["Config"]["Image"] == upgraded
        files.check("image upgrade")

        # Backup, the volume deleted, restore: with the README's commands.
        hub.stop(NAME)
        volume = f"{stack.prefix}-user-{NAME}"
        with tempfile.TemporaryDirectory() as backups:
            env = {**os.environ, "VOLUME": volume, "BACKUP": f"{backups}/{NAME}-work.tgz",
                   "HUB_IMAGE": stack.env["HUB_IMAGE"]}
            subprocess.run(["sh", "-euc", readme_commands("backup")], env=env, check=True, capture_output=True)
            stack.docker("volume", "rm", volume)
            subprocess.run(["sh", "-euc", readme_commands("restore")], env=env, check=True, capture_output=True)
        hub.start(NAME, options={"profile": "cpu"})
        owner = stack.docker("exec", stack.container_of(NAME), "stat", "-c", "%u", "/home/jovyan/work/keep/data.txt")
        assert owner.stdout.strip() == "1000"  # restored with its owner: the user can still write it
        files.check("backup and restore of the volume")
    finally:
        if hub.user(NAME)["servers"]:
            hub.stop(NAME)
        stack.up()
        stack.docker("rmi", upgraded, check=False)
    assert not files.lost, f"the file was lost after: {files.lost}"
