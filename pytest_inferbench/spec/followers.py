"""The follower inventory (`followers:` in the job file or in a --infer-followers file) and a
benchmark entry's `placement:`; both validated with pydantic, errors at file:line.

    followers:
      - host: gpu-box-1
        via: ssh                       # local (default) | ssh | socket
        address: bench@10.0.0.7        # ssh: user@host; socket: host:port
        trusted_network: false         # socket only: true allows a non-loopback address
        ssh_config: ~/.ssh/bench_config  # ssh only: passed as `ssh -F` (keys, ports, aliases)
        python: /opt/venv/bin/python   # not for socket: the socket server's own python runs
        chdir: /srv/bench
        devices: [cpu, cuda:0, cuda:1] # default [cpu]; one worker (slot) per device
        labels: {gpu: h200}
        cost_per_hour: 4.5

Each follower becomes one xdist worker per device ("slot"): a GPU slot sees only its device
(CUDA_VISIBLE_DEVICES), and INFERBENCH_SLOT names host/device so that the scheduler and the
result's `placement` know where the worker is. Nothing here imports pytest.
"""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from ..core.errors import SpecError, did_you_mean, format_field_path
from .yaml_lines import line_for, load_yaml

DEVICE = re.compile(r"^(cpu|cuda:\d+)$")
SLOT_ENV = "INFERBENCH_SLOT"          # "<host>/<device>", set in every follower's worker
LABELS_ENV = "INFERBENCH_LABELS"      # "k=v,k2=v2": the follower's labels, for its workers
_HOST = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_LABEL = re.compile(r"^[A-Za-z0-9._-]+$")


def _labels(value):
    if isinstance(value, dict):
        value = {str(k): str(v) for k, v in value.items()}
        for k, v in value.items():
            if not _LABEL.match(k) or not _LABEL.match(v):
                raise ValueError(f"a label is letters, digits, '.', '_' and '-' on both sides, "
                                 f"got {k}: {v}")
    return value


class Follower(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)
    host: str
    via: Literal["local", "ssh", "socket"] = "local"
    address: str | None = None
    ssh_config: str | None = None
    python: str | None = None
    chdir: str | None = None
    devices: tuple[str, ...] = ("cpu",)
    labels: dict[str, str] = {}
    cost_per_hour: float | None = Field(None, ge=0)
    # an execnet socket server runs whatever code reaches its port: only on a trusted network
    trusted_network: bool = False

    @field_validator("host")
    @classmethod
    def _host_name(cls, value):
        if not _HOST.match(value):
            raise ValueError(f"a host name is letters, digits, '.', '_' and '-', got {value!r}")
        return value

    @field_validator("devices")
    @classmethod
    def _devices(cls, value):
        if not value:
            raise ValueError("list at least one device (cpu, cuda:0, ...)")
        for d in value:
            if not DEVICE.match(d):
                raise ValueError(f"unknown device {d!r}; expected cpu or cuda:N")
        if len(set(value)) != len(value):
            raise ValueError("a device is listed twice")
        return value

    @field_validator("labels", mode="before")
    @classmethod
    def _labels_as_text(cls, value):
        return _labels(value)

    @model_validator(mode="after")
    def _address_fits_via(self):
        if self.via == "local" and self.address:
            raise ValueError("`address` does not apply to via: local")
        if self.via == "ssh" and not self.address:
            raise ValueError("via: ssh needs `address` (user@host)")
        if self.via == "socket":
            if not self.address or not re.match(r"^[^:\s]+:\d+$", self.address):
                raise ValueError("via: socket needs `address` as host:port")
            if self.python:     # execnet cannot choose it: the server runs what it runs
                raise ValueError("via: socket runs the python that runs the socket server; "
                                 "leave out `python`")
        if self.trusted_network and self.via != "socket":
            raise ValueError("`trusted_network` applies to via: socket only")
        if self.ssh_config and self.via != "ssh":
            raise ValueError("`ssh_config` applies to via: ssh only")
        return self

    def tx_specs(self) -> list[tuple[str, str]]:
        """(xdist --tx spec, slot name) for each device of this follower."""
        out = []
        for device in self.devices:
            parts = []
            if self.via == "local":
                parts.append("popen")
            elif self.via == "ssh":
                parts.append(f"ssh={self.address}")
                if self.ssh_config:
                    parts.append(f"ssh_config={Path(self.ssh_config).expanduser()}")
            else:
                parts.append(f"socket={self.address}")
            if self.python:
                parts.append(f"python={self.python}")
            if self.chdir:
                parts.append(f"chdir={self.chdir}")
            slot = f"{self.host}/{device}"
            parts.append(f"env:{SLOT_ENV}={slot}")
            if self.labels:
                parts.append(f"env:{LABELS_ENV}=" + ",".join(f"{k}={v}" for k, v in
                                                            sorted(self.labels.items())))
            if device.startswith("cuda:"):
                parts.append(f"env:CUDA_VISIBLE_DEVICES={device.split(':')[1]}")
            out.append(("//".join(parts), slot))
        return out


class Placement(BaseModel):
    """A benchmark entry's `placement`: hosts whose labels include these, and whether it may
    share its device (and, for a CPU cell, the host's CPUs) with other co-locatable cells."""
    model_config = ConfigDict(extra="forbid", frozen=True)
    labels: dict[str, str] = {}
    colocate: bool = False

    @field_validator("labels", mode="before")
    @classmethod
    def _labels_as_text(cls, value):
        return _labels(value)


def is_loopback(host: str) -> bool:
    """localhost, 127.0.0.0/8 or ::1; any other name or address counts as reachable by others
    (a name may resolve elsewhere tomorrow)."""
    host = host.strip("[]").lower()
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _socket_refusal(f: Follower) -> str | None:
    """Why a socket follower may not be used as written, or None."""
    if f.via != "socket" or f.trusted_network:
        return None
    host = f.address.rsplit(":", 1)[0]
    if is_loopback(host):
        return None
    return (f"via: socket at {f.address} is refused: an execnet socket server runs any code "
            f"sent by anyone who can reach {host}'s port, as the user that started it. Use "
            f"via: ssh (address: user@{host}), or an ssh tunnel to a server listening on "
            f"loopback (`ssh -N -L PORT:127.0.0.1:PORT user@{host}`, then address: "
            f"127.0.0.1:PORT); only on a network where everyone who can reach that port is "
            f"trusted, add `trusted_network: true` to this follower")


def _error(file, lines, message, path) -> SpecError:
    return SpecError(message, file=file, line=line_for(lines, path),
                     field=format_field_path(path) or None)


def _validate(model_cls, value, file, lines, path):
    try:
        return model_cls.model_validate(value)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and "[" in p))
        if err["type"] == "extra_forbidden":
            key = loc[-1] if loc else "?"
            allowed = list(model_cls.model_fields)
            msg = f"unknown key '{key}'{did_you_mean(key, allowed)}; expected one of: " \
                  f"{', '.join(allowed)}"
        elif err["type"] == "missing":
            msg = "this field is required"
        else:
            msg = err["msg"].replace("Value error, ", "").replace("Input should be", "expected")
        raise _error(file, lines, msg, tuple(path) + loc) from None


def parse_followers(raw, file, lines, path=("followers",)) -> tuple[Follower, ...]:
    """The `followers` list as written (file and line map for the errors)."""
    if not isinstance(raw, list) or not raw:
        raise _error(file, lines, "expected a non-empty list of followers, each with `host`",
                     path)
    followers, seen = [], {}
    for i, entry in enumerate(raw):
        f = _validate(Follower, entry, file, lines, path + (i,))
        if f.host in seen:
            raise _error(file, lines, f"host '{f.host}' is listed twice (entry {seen[f.host]})",
                         path + (i, "host"))
        if (why := _socket_refusal(f)) is not None:
            raise _error(file, lines, why, path + (i, "address"))
        seen[f.host] = i
        followers.append(f)
    return tuple(followers)


def parse_placement(raw, file, lines, path) -> Placement:
    if not isinstance(raw, dict):
        raise _error(file, lines, "expected a mapping such as {labels: {gpu: h200}, "
                                  "colocate: false}", path)
    return _validate(Placement, raw, file, lines, path)


def load_followers(file: str | Path) -> tuple[Follower, ...]:
    """A --infer-followers file: `followers:` at the top level, as in the job file."""
    file = Path(file).resolve()
    if not file.exists():
        raise SpecError("followers file not found", file=file)
    data, lines = load_yaml(file)
    if not isinstance(data, dict) or "followers" not in data:
        raise SpecError("expected `followers:` with a list of hosts", file=file, line=1)
    extra = [k for k in data if k != "followers"]
    if extra:
        raise _error(file, lines, f"unknown key '{extra[0]}'; a followers file has only "
                                  f"`followers`", (extra[0],))
    return parse_followers(data["followers"], file, lines)


def tx_specs(followers) -> list[tuple[str, str]]:
    return [spec for f in followers for spec in f.tx_specs()]
