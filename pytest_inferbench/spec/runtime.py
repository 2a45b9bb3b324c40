"""The `runtime` and `threads` axes, and the runtime registry: a runtime is added by writing
one module in runtimes/ with a Runner class and naming it here (an import path, so that loading
a spec never imports torch or onnxruntime)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

RUNTIMES: dict[str, str] = {
    "torch": "pytest_inferbench.runtimes.torch_eager:TorchRunner",
    "torchscript": "pytest_inferbench.runtimes.torchscript:TorchScriptRunner",
    "torch_compile": "pytest_inferbench.runtimes.torch_compile:TorchCompileRunner",
    "onnxruntime": "pytest_inferbench.runtimes.onnxruntime_runner:OnnxRuntimeRunner",
    "python": "pytest_inferbench.runtimes.python_callable:PythonRunner",
}


# Options a runtime mapping may carry, per runtime (`runtime: {name: onnxruntime, ...}`).
RUNTIME_OPTIONS = {
    "torch": ("include_copies", "cuda_graphs"),
    "torchscript": ("include_copies", "cuda_graphs"),
    "torch_compile": ("include_copies", "mode"),
    "onnxruntime": ("include_copies", "graph_optimization", "provider", "quantization"),
    "python": (),
}
_OPTION_ALIASES = {"graph_optimization": "opt", "provider": "ep", "mode": "mode",
                   "include_copies": "copies", "cuda_graphs": "graphs", "quantization": "quant"}


class RuntimeSpec(BaseModel):
    """A runtime and its options; a plain name is {name: NAME} with every option at its default."""
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)
    name: str
    include_copies: bool = False   # time host<->device copies of inputs/outputs with each query
    cuda_graphs: bool = False      # torch/torchscript on cuda: capture once, replay per query
    graph_optimization: Literal["disabled", "basic", "extended", "all"] | None = None
    provider: Literal["cpu", "cuda", "tensorrt"] | None = None
    # onnxruntime int8: dynamic (default) or static QDQ calibrated on generated inputs
    quantization: Literal["dynamic", "static"] | None = None
    mode: Literal["default", "reduce-overhead", "max-autotune",
                  "max-autotune-no-cudagraphs"] | None = None

    @model_validator(mode="after")
    def _options_fit_the_runtime(self):
        allowed = RUNTIME_OPTIONS.get(self.name, ())
        for key in self.options():
            if key not in allowed:
                hint = ("; torch.compile captures CUDA graphs itself with mode: reduce-overhead"
                        if key == "cuda_graphs" and self.name == "torch_compile" else "")
                raise ValueError(f"option '{key}' does not apply to runtime {self.name} (its "
                                 f"options: {', '.join(allowed) or 'none'}){hint}")
        return self

    def options(self) -> dict:
        return {k: v for k, v in self.model_dump(exclude={"name"}).items()
                if v != type(self).model_fields[k].default}

    def label(self) -> str:
        opts = self.options()
        if not opts:
            return self.name
        inner = ",".join(_OPTION_ALIASES[k] if v is True else f"{_OPTION_ALIASES[k]}={v}"
                         for k, v in opts.items())
        return f"{self.name}({inner})"


class Threads(BaseModel):
    """Thread counts for the runtime: `threads: 4` (intra-op) or {intra: 4, inter: 1}."""
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)
    intra: int | None = Field(None, ge=1)
    inter: int | None = Field(None, ge=1)

    def label(self) -> str:
        return f"t{self.intra or 'auto'}" + (f"x{self.inter}" if self.inter else "")
