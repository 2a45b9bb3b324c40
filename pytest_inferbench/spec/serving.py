"""The `serving` axis: in this process, behind a server the harness launches (Triton, the
FastAPI KServe server, the OpenAI-compatible decoder server), or an endpoint someone else runs."""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator

from .settings import Duration

SERVING_SYSTEMS = ("inprocess", "triton", "http", "endpoint", "openai")


class InputDecl(BaseModel):
    """A tensor's per-sample shape (no batch axis), dtype, and integer range [0, high)."""
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)
    shape: tuple[Annotated[int, Field(ge=1)], ...]
    dtype: str | None = None
    high: int | None = Field(None, ge=1)


def _input_decl(value):
    return {"shape": value} if isinstance(value, (list, tuple)) else value


class Serving(BaseModel):
    """Where the model runs: in the pytest process, behind a server the harness launches
    (Triton through PyTriton, or FastAPI on uvicorn), or behind an existing KServe v2 endpoint."""
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)
    system: Literal[SERVING_SYSTEMS] = "inprocess"
    instances: int = Field(1, ge=1)             # inprocess worker threads; triton instances
    protocol: Literal["http", "grpc"] = "http"  # triton, endpoint
    max_batch_size: int = Field(32, ge=0)       # triton
    dynamic_batching: bool = True               # triton
    max_queue_delay: Duration = 0.0001          # triton dynamic batcher
    url: str | None = None                      # endpoint: "127.0.0.1:8000" or "http://..."
    model: str | None = None                    # endpoint: the served model's name
    # endpoint: shapes for dynamic dimensions / integer ranges, as perf_analyzer's --shape
    inputs: dict[str, Annotated[InputDecl, BeforeValidator(_input_decl)]] | None = None
    data: str | None = None                     # endpoint: real inputs from a .npz or .json file
    pin_cpus: bool = True                       # triton, http: server and generator on disjoint CPUs
    api: Literal["chat", "completions"] = "chat"  # openai: /v1/chat/completions or /v1/completions
    stream: bool = True                         # openai: streamed (SSE) responses
    api_key_env: str | None = None              # openai: environment variable holding the key
    # triton, http, endpoint: tensors as JSON lists or in Triton's binary extension; auto:
    # binary where the server's metadata lists `binary_tensor_data`, else JSON (HTTP only)
    tensor_format: Literal["auto", "json", "binary"] = "auto"
    # endpoint: HTTP headers (gRPC metadata) sent with every request, the statistics API's
    # too; a value "${VAR}" is read from the environment at run time. Never dumped (results
    # record the names only).
    headers: dict[str, str] | None = Field(None, exclude=True)

    @model_validator(mode="after")
    def _fields_fit_the_system(self):
        allowed = _SERVING_FIELDS[self.system]
        for name, field in type(self).model_fields.items():
            if name != "system" and getattr(self, name) != field.default and name not in allowed:
                raise ValueError(f"`{name}` does not apply to serving system {self.system}")
        if self.system == "endpoint" and (not self.url or not self.model):
            raise ValueError("serving system endpoint needs `url` and `model`")
        if self.system == "http" and self.protocol != "http":
            raise ValueError("serving system http speaks HTTP only")
        if self.protocol == "grpc" and self.tensor_format != "auto":
            raise ValueError("`tensor_format` applies to HTTP: gRPC carries tensors as raw bytes")
        for name in self.headers or {}:
            if not re.fullmatch(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+", name):
                raise ValueError(f"header name {name!r} is not an HTTP header name")
        return self

    def label(self) -> str:
        if self.system == "inprocess":
            return self.system + (f"x{self.instances}" if self.instances != 1 else "")
        if self.system == "triton":
            parts = [self.protocol, f"mbs{self.max_batch_size}"]
            parts.append(f"db{self.max_queue_delay * 1e6:g}us" if self.dynamic_batching
                         else "nodb")
            if self.instances != 1:
                parts.append(f"x{self.instances}")
            if self.tensor_format != "auto":
                parts.append(self.tensor_format)
            return f"triton({','.join(parts)})"
        if self.system == "endpoint":
            fmt = f",{self.tensor_format}" if self.tensor_format != "auto" else ""
            return f"endpoint({self.protocol},{self.model}{fmt})"
        if self.system == "http" and self.tensor_format != "auto":
            return f"http({self.tensor_format})"
        if self.system == "openai":
            parts = [self.api] + ([self.model] if self.model else []) + \
                ([] if self.stream else ["nostream"])
            return f"openai({','.join(parts)})"
        return self.system


_SERVING_FIELDS = {"inprocess": ("instances",),
                   "triton": ("instances", "protocol", "max_batch_size", "dynamic_batching",
                              "max_queue_delay", "pin_cpus", "tensor_format"),
                   "http": ("pin_cpus", "tensor_format"),
                   "endpoint": ("protocol", "url", "model", "inputs", "data", "tensor_format",
                                "headers"),
                   "openai": ("url", "model", "api", "stream", "api_key_env", "pin_cpus",
                              "max_batch_size")}
