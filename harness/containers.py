"""Podman for the container tests, in a store of its own that is deleted afterwards.

No container registry is reachable here, so the images the project's files name are built
locally and tagged with those names (stand-ins, ``harness/standins``): a Debian bookworm root
file system made by debootstrap is the base of all of them. What this machine needs besides:
the ``runc`` runtime (``crun`` fails on its cgroups), explicit ulimits, the host's certificate
authorities mounted into builds (downloads go through one the images lack), and the Docker
image format, which keeps ``HEALTHCHECK``. Nothing runs podman's health checks on a machine
without systemd, so ``wait_healthy`` runs them itself.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

ROOT = Path(__file__).parent.parent
STANDINS = Path(__file__).parent / "standins"
ROOTFS = ROOT / ".run/rootfs/bookworm.tar"  # made once per clone: debootstrap takes ~30 s
STORES = ROOT / ".run/podman"  # one store per test run, named by its process id
BASE = "localhost/bib-debian:bookworm"
MIRROR = "http://deb.debian.org/debian"
CERTIFICATES = Path("/etc/ssl/certs")
# the hard limit of open files here is 20000; podman's default asks for more and is refused
ULIMITS = ("nofile=20000:20000", "nproc=4096:4096")
APP = "localhost/bib-app:test"


class StandIn(NamedTuple):
    file: str  # its Containerfile, in harness/standins
    name: str  # the name the project's files give the image it stands in for


IMAGES = {
    "python": StandIn("python.Containerfile", "docker.io/library/python:3.11-slim"),
    "redis": StandIn("redis.Containerfile", "docker.io/library/redis:7-alpine"),
    "ollama": StandIn("ollama.Containerfile", "docker.io/ollama/ollama:latest"),
}


class Podman:
    """``podman`` with its storage, state and settings under ``home``."""

    def __init__(self, home: Path) -> None:
        self.home = home
        quoted = ", ".join(f'"{limit}"' for limit in ULIMITS)
        (home / "containers.conf").write_text(
            f"[containers]\ndefault_ulimits = [{quoted}]\n"
            f'[engine]\nruntime = "runc"\ntmp_dir = "{home / "tmp"}"\n'
            f'events_logger = "file"\nevents_logfile_path = "{home / "events.log"}"\n'
            f'[network]\nnetwork_config_dir = "{home / "networks"}"\n'
        )
        (home / "storage.conf").write_text(
            f'[storage]\ndriver = "overlay"\ngraphroot = "{home / "storage"}"\n'
            f'runroot = "{home / "run"}"\n'
        )
        (home / "pip.conf").write_text(f"[global]\ncert = {CERTIFICATES}/ca-certificates.crt\n")
        self.env = {
            **os.environ,
            "CONTAINERS_CONF": str(home / "containers.conf"),
            "CONTAINERS_STORAGE_CONF": str(home / "storage.conf"),
        }

    def __call__(
        self, *args: str, timeout: float = 120, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        """Runs ``podman args``; a failure raises with what podman printed."""
        done = subprocess.run(
            ["podman", *args], env=self.env, capture_output=True, text=True,
            timeout=timeout, check=False,
        )  # fmt: skip
        if check and done.returncode != 0:
            raise RuntimeError(f"podman {' '.join(args)}: {done.returncode}\n{done.stderr}")
        return done

    def certificates(self) -> list[str]:
        """Mounts for a build whose downloads go through this machine's certificate authority:
        the host's CAs and a pip configuration naming them (the Dockerfile stays as it is)."""
        return [
            "-v", f"{CERTIFICATES}:{CERTIFICATES}:ro",
            "-v", f"{self.home / 'pip.conf'}:/etc/pip.conf:ro",
        ]  # fmt: skip

    def build(self, tag: str, context: Path, *extra: str) -> None:
        """In the Docker image format, the one that keeps HEALTHCHECK."""
        self("build", "--format", "docker", *extra, "-t", tag, str(context), timeout=600)

    def wait_healthy(self, container: str, seconds: float = 60) -> None:
        """Runs the container's health check every half second until it passes, as systemd's
        timer would run it every interval (nothing runs it here otherwise)."""
        deadline = time.monotonic() + seconds
        while self("healthcheck", "run", container, check=False, timeout=30).returncode != 0:
            if time.monotonic() > deadline:
                logs = self("logs", container, check=False)
                raise AssertionError(f"{container} not healthy:\n{logs.stdout}{logs.stderr}")
            time.sleep(0.5)

    def inspect(self, container: str, template: str) -> str:
        return self("inspect", "--format", template, container).stdout.strip()

    def remove_everything(self) -> None:
        """Every container, pod, network, volume and image of this store (``system reset``;
        the containers first, killed at once rather than each given its stop timeout), then the
        store itself."""
        self("rm", "--all", "--force", "--time", "0", check=False)
        self("system", "reset", "--force", check=False, timeout=120)
        shutil.rmtree(self.home, ignore_errors=True)


def rootfs() -> Path:
    """The bookworm root file system as a tar, made by debootstrap unless already made."""
    if not ROOTFS.exists():
        ROOTFS.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=ROOTFS.parent) as target:
            subprocess.run(
                ["debootstrap", "--variant=minbase", "bookworm", target, MIRROR],
                check=True, capture_output=True, timeout=600,
            )  # fmt: skip
            partial = ROOTFS.with_suffix(".partial")
            # without the packages it downloaded and their lists, as Debian's own images are
            leftovers = ("./var/cache/apt/archives/*.deb", "./var/cache/apt/*.bin",
                         "./var/lib/apt/lists/*_*")  # fmt: skip
            excluded = [f"--exclude={pattern}" for pattern in leftovers]
            subprocess.run(["tar", "-C", target, *excluded, "-cf", str(partial), "."], check=True)
            partial.rename(ROOTFS)
    return ROOTFS


def build_images(podman: Podman) -> None:
    """The base, the python stand-in, the project's image from its Dockerfile as it is, then
    the Redis and Ollama stand-ins (the latter runs the simulator from the project's image)."""
    podman("import", str(rootfs()), BASE, timeout=300)
    build_stand_in(podman, IMAGES["python"])
    podman.build(APP, ROOT, *podman.certificates())
    build_stand_in(podman, IMAGES["redis"])
    build_stand_in(podman, IMAGES["ollama"], "--build-arg", f"APP_IMAGE={APP}")


def build_stand_in(podman: Podman, stand_in: StandIn, *extra: str) -> None:
    podman.build(stand_in.name, STANDINS, "-f", str(STANDINS / stand_in.file), *extra)


@contextlib.contextmanager
def podman_store() -> Iterator[Podman]:
    """A Podman with its own store, everything in it removed afterwards, failure or not; and
    first the stores of earlier runs that were killed before they could remove theirs."""
    for stale in STORES.glob("*"):
        if not _alive(int(stale.name)):
            Podman(stale).remove_everything()
    home = STORES / str(os.getpid())
    home.mkdir(parents=True)
    podman = Podman(home)
    try:
        yield podman
    finally:
        podman.remove_everything()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True
