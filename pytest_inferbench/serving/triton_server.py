"""A Triton Inference Server (through NVIDIA PyTriton) serving one cell's model; run as
`python -m pytest_inferbench.serving.triton_server CELL_JSON CACHE_DIR HTTP GRPC METRICS`
(the statistics token in INFERBENCH_TRITON_TOKEN)
by the launcher. Triton's knobs come from the cell's `serving` mapping."""

from __future__ import annotations

import os
import signal
import sys
import tempfile

import numpy as np

from .model_host import HostedModel


def main(argv: list[str]) -> None:
    cell_path, cache_dir, http_port, grpc_port, metrics_port = argv
    token = os.environ.pop("INFERBENCH_TRITON_TOKEN")   # from the launcher, not argv
    from pytriton.decorators import batch
    from pytriton.model_config import DynamicBatcher, ModelConfig, Tensor
    from pytriton.triton import Triton, TritonConfig


    host = HostedModel(cell_path, cache_dir)
    serving = host.cell.serving

    @batch
    def infer(**inputs):
        return host.infer(inputs)

    inputs = [Tensor(name=t.name, dtype=np.dtype(t.dtype), shape=t.shape)
              for t in host.signature.inputs]
    outputs = [Tensor(name=n, dtype=np.float32, shape=s)
               for n, s in zip(host.output_names, host.output_shapes)]
    batcher = (DynamicBatcher(max_queue_delay_microseconds=int(serving.max_queue_delay * 1e6))
               if serving.dynamic_batching else None)
    config = ModelConfig(max_batch_size=serving.max_batch_size, batcher=batcher)
    triton_config = TritonConfig(http_port=int(http_port), grpc_port=int(grpc_port),
                                 metrics_port=int(metrics_port), http_address="127.0.0.1",
                                 grpc_address="127.0.0.1",
                                 # stopping must not wait for idle client connections (30 s by
                                 # default): the harness stops a server only between cells
                                 exit_timeout_secs=1)
    try:    # PyTriton >= 0.7 protects the statistics API with a token we choose
        from pytriton.triton import TritonSecurityConfig
        extra = {"security_config": TritonSecurityConfig(access_token=token)}
    except ImportError:
        extra = {}
    # A short workspace path: PyTriton's backend talks over Unix sockets inside it, and a path
    # under a deep $HOME (pytest's tmp dirs) can pass the 107-byte socket path limit.
    workspace = os.path.join(tempfile.mkdtemp(prefix="ibt-", dir="/tmp"), "w")  # must not exist
    with Triton(config=triton_config, workspace=workspace, **extra) as triton:
        triton.bind(model_name="model", infer_func=[infer] * serving.instances, inputs=inputs,
                    outputs=outputs, config=config, strict=False)
        signal.signal(signal.SIGTERM, lambda *_: triton.stop())
        triton.serve()


if __name__ == "__main__":
    main(sys.argv[1:])
