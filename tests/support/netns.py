"""Network namespaces of a test's own: "other hosts" on veth pairs, addresses from 192.0.2.0/24.

```python
with Hosts(2) as hosts:                  # two namespaces, a veth pair each
    hosts[0].server_address              # 192.0.2.x: the host end, where a server listens
    hosts[0].command("python", ...)      # argv run inside the namespace (ip netns exec)
    hosts[0].cut(); hosts[0].mend()      # ip link set <host end> down / up
# namespaces and veth pairs removed, even when the test failed
```

Only root on Linux with iproute2 may make them; :func:`netns_unavailable` says
why not, for a skip with that reason. The addresses are TEST-NET-1
(192.0.2.0/24, RFC 5737, reserved for documentation), on the test's own veth
pairs only: one /30 per namespace from its upper half (192.0.2.128/25),
never one holding an address the host already uses or routes through, the
host end the first address of it and the namespace end the second.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
from types import TracebackType
from typing import Self

from tests.support.system import fail

IP = "/usr/sbin/ip"
"""Debian's ``ip`` (package iproute2)."""
NETWORK = "192.0.2.0/24"
"""The only range these namespaces use."""


def netns_unavailable() -> str | None:
    """Why network namespaces cannot be made here, or None when they can."""
    if not os.path.exists(IP) and shutil.which("ip") is None:
        return "iproute2's ip is not installed (apt-get install iproute2)"
    if os.geteuid() != 0:
        return "making network namespaces (ip netns add) needs root"
    probe = f"ecl-probe-{secrets.token_hex(3)}"
    made = subprocess.run([_ip(), "netns", "add", probe], capture_output=True, text=True)
    if made.returncode != 0:
        return f"ip netns add is not permitted here: {made.stderr.strip()[:200]}"
    subprocess.run([_ip(), "netns", "delete", probe], capture_output=True, check=False)
    return None


def _ip() -> str:
    return IP if os.path.exists(IP) else str(shutil.which("ip"))


def _run(*argv: str) -> None:
    result = subprocess.run([_ip(), *argv], capture_output=True, text=True, timeout=15)
    if result.returncode != 0:
        fail(f"ip {' '.join(argv)} failed: {result.stderr.strip()}")


class Host:
    """One namespace and its veth pair."""

    def __init__(self, name: str, block: int) -> None:
        self.namespace = f"ecl-{name}"
        self.host_end = f"ecl{name}h"
        self.namespace_end = f"ecl{name}n"
        self.server_address = f"192.0.2.{block * 4 + 1}"
        """The host end's address: what a server for this namespace listens on."""
        self.address = f"192.0.2.{block * 4 + 2}"
        """The namespace end's address: where its clients come from."""
        self.network = f"192.0.2.{block * 4}/30"

    def create(self) -> None:
        _run("netns", "add", self.namespace)
        _run("link", "add", self.host_end, "type", "veth", "peer", "name", self.namespace_end)
        _run("link", "set", self.namespace_end, "netns", self.namespace)
        _run("addr", "add", f"{self.server_address}/30", "dev", self.host_end)
        _run("link", "set", self.host_end, "up")
        inside = ("-n", self.namespace)
        _run(*inside, "addr", "add", f"{self.address}/30", "dev", self.namespace_end)
        _run(*inside, "link", "set", self.namespace_end, "up")
        _run(*inside, "link", "set", "lo", "up")

    def remove(self) -> None:
        """Delete the veth pair (both ends go) and the namespace; quiet if already gone."""
        for argv in (("link", "delete", self.host_end), ("netns", "delete", self.namespace)):
            subprocess.run([_ip(), *argv], capture_output=True, check=False, timeout=15)

    def command(self, *argv: str) -> list[str]:
        """``argv`` run inside the namespace."""
        return [_ip(), "netns", "exec", self.namespace, *argv]

    def cut(self) -> None:
        """Take the host end of the link down: packets to and from the namespace are lost."""
        _run("link", "set", self.host_end, "down")

    def mend(self) -> None:
        """Bring the link up again."""
        _run("link", "set", self.host_end, "up")


def _addresses_in_use() -> set[str]:
    """Every IPv4 address the host has, routes through or has seen as a neighbour."""
    seen: set[str] = set()
    for argv in (("-4", "-o", "addr"), ("-4", "route"), ("-4", "neigh")):
        result = subprocess.run([_ip(), *argv], capture_output=True, text=True, check=False)
        for word in result.stdout.replace("/", " ").split():
            if word.count(".") == 3 and all(part.isdigit() for part in word.split(".")):
                seen.add(word)
    return seen


def _free_blocks(count: int) -> list[int]:
    """``count`` /30 blocks of 192.0.2.128/25 that hold no address the host uses.

    The machine's own network may be in 192.0.2.0/24 too (a sandbox's
    gateway often is 192.0.2.1): a /30 of ours on a veth would shadow it.
    """
    used = _addresses_in_use()
    free = [
        block
        for block in range(32, 64)
        if not any(f"192.0.2.{block * 4 + n}" in used for n in range(4))
    ]
    if len(free) < count:
        fail(f"no {count} free /30 blocks in 192.0.2.128/25 on this host")
    start = secrets.randbelow(len(free) - count + 1)
    return free[start : start + count]


class Hosts:
    """``count`` namespaces of the test's own, each on a veth pair; removed on exit."""

    def __init__(self, count: int) -> None:
        tag = secrets.token_hex(2)
        blocks = _free_blocks(count)
        self.hosts = [Host(f"{tag}{chr(97 + n)}", block) for n, block in enumerate(blocks)]

    def __getitem__(self, index: int) -> Host:
        return self.hosts[index]

    @property
    def networks(self) -> list[str]:
        """The /30 of each namespace."""
        return [host.network for host in self.hosts]

    def __enter__(self) -> Self:
        try:
            for host in self.hosts:
                host.create()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Remove every namespace and veth pair made."""
        for host in self.hosts:
            host.remove()
