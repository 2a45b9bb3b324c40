"""The "framework plus web server" baseline: FastAPI on uvicorn speaking the KServe v2 HTTP
protocol, one model. Tensors come and go as JSON lists or in Triton's binary-tensor extension
(`binary_tensor_data`, listed in the server metadata): inputs as the request sends them,
outputs in binary where the request asks (`binary_data_output`, or an output's own
`binary_data`), else JSON. The model runs on the event loop's thread: one request at a time.
Run as `python -m pytest_inferbench.serving.http_server CELL_JSON CACHE_DIR PORT` by the
launcher."""

# No `from __future__ import annotations` here: FastAPI reads the handlers' annotations.
import json
import sys

import numpy as np

from .model_host import HostedModel

_DTYPES = {"FP32": np.float32, "FP16": np.float16, "FP64": np.float64, "INT64": np.int64,
           "INT32": np.int32, "INT8": np.int8, "UINT8": np.uint8, "BOOL": np.bool_}
_NAMES = {np.dtype(v): k for k, v in _DTYPES.items()}


def make_app(host):
    from fastapi import FastAPI, Request, Response
    from fastapi.responses import JSONResponse

    app = FastAPI()
    meta = {"name": "model", "platform": "pytest-inferbench-fastapi",
            "inputs": [{"name": t.name, "datatype": _NAMES[np.dtype(t.dtype)],
                        "shape": [-1, *t.shape]} for t in host.signature.inputs],
            "outputs": [{"name": n, "datatype": "FP32", "shape": [-1, *s]}
                        for n, s in zip(host.output_names, host.output_shapes)]}

    @app.get("/v2/health/ready")
    @app.get("/v2/health/live")
    def ready():
        return Response(status_code=200)

    @app.get("/v2/models/model/ready")
    def model_ready():
        return Response(status_code=200)

    @app.get("/v2/models/model")
    def metadata():
        return meta

    @app.get("/v2")
    def server_metadata():
        return SERVER_METADATA

    @app.post("/v2/models/model/infer")
    async def infer(request: Request):
        body = await request.body()
        header_len = request.headers.get("inference-header-content-length")
        head = json.loads(body[:int(header_len)] if header_len else body)
        offset = int(header_len) if header_len else 0
        inputs = {}
        for spec in head["inputs"]:
            dtype = _DTYPES[spec["datatype"]]
            size = (spec.get("parameters") or {}).get("binary_data_size")
            if size is not None:
                arr = np.frombuffer(body[offset:offset + size], dtype=dtype)
                offset += size
            else:
                arr = np.asarray(spec["data"], dtype=dtype)
            inputs[spec["name"]] = arr.reshape(spec["shape"])
        try:
            outputs = host.infer(inputs)
        except Exception as exc:  # noqa: BLE001 - the client gets the error, the server lives
            return JSONResponse({"error": f"{type(exc).__name__}: {exc}"}, status_code=500)
        try:
            wanted = _requested(head, outputs)
        except KeyError as exc:
            return JSONResponse({"error": f"unknown output {exc}"}, status_code=400)
        return reply(head.get("id", ""), outputs, wanted)
    return app


CONCURRENCY = ("one uvicorn worker; the model runs on its event loop thread, one request at "
               "a time (no batching across requests)")
SERVER_METADATA = {"name": "pytest-inferbench-fastapi", "version": "1",
                   "extensions": ["binary_tensor_data"]}


def _requested(head: dict, outputs: dict) -> dict:
    """{output name: binary?} for the outputs the request asks for (all when it names none)."""
    default = bool((head.get("parameters") or {}).get("binary_data_output", False))
    asked = head.get("outputs")
    if not asked:
        return {name: default for name in outputs}
    wanted = {}
    for spec in asked:
        if spec["name"] not in outputs:
            raise KeyError(spec["name"])
        wanted[spec["name"]] = bool((spec.get("parameters") or {}).get("binary_data", default))
    return wanted


def reply(request_id: str, outputs: dict, wanted: dict):
    """The response: a JSON header, then the binary outputs' bytes in order, with the header's
    length in `Inference-Header-Content-Length`; plain JSON when no output is binary. Encoded
    here (json.dumps), not by FastAPI's encoder, which walks every list element in Python."""
    from fastapi import Response
    entries, buffers = [], []
    for name, binary in wanted.items():
        arr = np.ascontiguousarray(outputs[name], dtype=np.float32)
        entry = {"name": name, "datatype": "FP32", "shape": list(arr.shape)}
        if binary:
            raw = arr.tobytes()
            entry["parameters"] = {"binary_data_size": len(raw)}
            buffers.append(raw)
        else:
            entry["data"] = arr.ravel().tolist()
        entries.append(entry)
    head = json.dumps({"model_name": "model", "id": request_id, "outputs": entries},
                      separators=(",", ":")).encode()
    if not buffers:
        return Response(head, media_type="application/json")
    return Response(b"".join([head, *buffers]), media_type="application/octet-stream",
                    headers={"Inference-Header-Content-Length": str(len(head))})


def main(argv: list[str]) -> None:
    cell_path, cache_dir, port = argv
    import uvicorn

    app = make_app(HostedModel(cell_path, cache_dir))
    uvicorn.run(app, host="127.0.0.1", port=int(port), log_level="warning", access_log=False)


if __name__ == "__main__":
    main(sys.argv[1:])
