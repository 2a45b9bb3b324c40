"""The plugin's own OpenAI-compatible server: a generated decoder (models/_decoder.py) behind
FastAPI on uvicorn, `/v1/chat/completions` and `/v1/completions`, streamed (SSE, with `usage`
when `stream_options.include_usage` asks) or not, so a generative benchmark runs on a fresh
machine with nothing downloaded. Run as
`python -m pytest_inferbench.serving.openai_server CELL_JSON CACHE_DIR PORT` by the launcher.

- Tokenizer: deliberately trivial and deterministic: one token per whitespace-separated word
  (what workload/prompts.py builds prompts from, so input lengths are exact), ids by CRC32;
  an output token's text is one word. Id 0 is the end-of-sequence token.
- Scheduling: iteration-level (continuous) batching: an engine thread takes up to
  `max_batch_size` sequences; each iteration prefills the sequences that just arrived and
  decodes one token for every running one, and new requests join between iterations. The
  sequences of an iteration are computed one after another, not as one padded tensor.
- `max_tokens` (default 16), `min_tokens`, and `ignore_eos` (without it, greedy decoding stops
  at the end-of-sequence token once min_tokens are out). A prompt that does not fit
  `max_seq` with its max_tokens is refused with HTTP 400, as real servers do.
"""

# No `from __future__ import annotations` here: FastAPI reads the handlers' annotations.
import asyncio
import json
import os
import queue
import sys
import threading
import time

from ..models.families import build as build_family
from ..models.tokenizer import Tokenizer
from ..spec import Cell

EOS = 0


class _Sequence:
    def __init__(self, ids, max_tokens, min_tokens, ignore_eos, loop):
        self.ids, self.max_tokens, self.min_tokens = ids, max_tokens, min_tokens
        self.ignore_eos = ignore_eos
        self.loop, self.out = loop, asyncio.Queue()
        self.cache = None
        self.produced = 0
        self.next = None

    def emit(self, item):
        self.loop.call_soon_threadsafe(self.out.put_nowait, item)


class Engine:
    """The decode loop, in its own thread (torch releases the GIL while it computes)."""

    def __init__(self, model, device, max_batch: int):
        self.model, self.device, self.max_batch = model, device, max(1, max_batch)
        self.pending: queue.SimpleQueue = queue.SimpleQueue()
        threading.Thread(target=self._run, name="inferbench-decoder", daemon=True).start()

    def submit(self, seq: _Sequence) -> None:
        self.pending.put(seq)

    def _run(self):
        import torch
        active: list[_Sequence] = []
        while True:
            if not active:
                active.append(self.pending.get())
            while len(active) < self.max_batch:
                try:
                    active.append(self.pending.get_nowait())
                except queue.Empty:
                    break
            for seq in list(active):
                try:
                    if seq.cache is None:
                        ids = torch.tensor([seq.ids], device=self.device)
                        token, seq.cache = self.model.prefill(ids)
                    else:
                        position = len(seq.ids) + seq.produced - 1
                        token, seq.cache = self.model.step(seq.next, position, seq.cache)
                except Exception as exc:  # noqa: BLE001 - the request fails, the server lives
                    seq.emit(("error", f"{type(exc).__name__}: {exc}"))
                    active.remove(seq)
                    continue
                seq.produced += 1
                seq.next = token
                eos = token == EOS and not seq.ignore_eos and seq.produced >= seq.min_tokens
                seq.emit(("token", token))
                if eos or seq.produced >= seq.max_tokens:
                    seq.emit(("finish", "stop" if eos else "length"))
                    seq.cache = None
                    active.remove(seq)


def make_app(engine: Engine, tokenizer: Tokenizer, served: str, max_seq: int):
    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse, StreamingResponse

    app = FastAPI()

    @app.get("/health")
    def health():
        return {"status": "ok"}

    @app.get("/v1/models")
    def models():
        return {"object": "list", "data": [{"id": served, "object": "model"}]}

    def error(status, message):
        return JSONResponse({"error": {"message": message, "code": status}}, status_code=status)

    async def complete(request: Request, chat: bool):
        try:
            body = await request.json()
            if body.get("model") != served:
                return error(404, f"model '{body.get('model')}' is not served here "
                                  f"(this server serves '{served}')")
            if chat:
                text = "\n".join(str(m.get("content") or "") for m in body["messages"])
            else:
                text = body["prompt"]
                text = " ".join(text) if isinstance(text, list) else str(text)
            max_tokens = int(body.get("max_tokens") or 16)
            min_tokens = int(body.get("min_tokens") or 0)
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            return error(400, f"bad request: {type(exc).__name__}: {exc}")
        ids = tokenizer.encode(text) or [EOS]
        if len(ids) + max_tokens > max_seq:
            return error(400, f"{len(ids)} prompt tokens + max_tokens {max_tokens} exceed "
                              f"the model's max_seq {max_seq}")
        seq = _Sequence(ids, max_tokens, min_tokens, bool(body.get("ignore_eos")),
                        asyncio.get_running_loop())
        engine.submit(seq)
        rid = f"{'chatcmpl' if chat else 'cmpl'}-{os.urandom(8).hex()}"
        created = int(time.time())
        kind = "chat.completion" if chat else "text_completion"
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))

        def usage(n):
            return {"prompt_tokens": len(ids), "completion_tokens": n,
                    "total_tokens": len(ids) + n}

        def chunk(text, finish):
            choice = ({"index": 0, "delta": {"content": text} if text else {},
                       "finish_reason": finish} if chat
                      else {"index": 0, "text": text, "finish_reason": finish})
            return {"id": rid, "object": kind + (".chunk" if chat else ""),
                    "created": created, "model": served, "choices": [choice]}

        if body.get("stream"):
            async def events():
                n = 0
                while True:
                    what, value = await seq.out.get()
                    if what == "token":
                        n += 1
                        data = chunk(tokenizer.decode(value), None)
                    elif what == "finish":
                        data = chunk("", value)
                    else:
                        data = {"error": {"message": value}}
                    yield f"data: {json.dumps(data)}\n\n"
                    if what != "token":
                        break
                if what == "finish" and include_usage:
                    yield f"data: {json.dumps({'id': rid, 'object': kind, 'choices': [], 'model': served, 'usage': usage(n)})}\n\n"
                yield "data: [DONE]\n\n"
            return StreamingResponse(events(), media_type="text/event-stream")
        pieces, finish = [], None
        while True:
            what, value = await seq.out.get()
            if what == "token":
                pieces.append(tokenizer.decode(value))
            elif what == "finish":
                finish = value
                break
            else:
                return error(500, value)
        text = "".join(pieces)
        choice = ({"index": 0, "message": {"role": "assistant", "content": text}} if chat
                  else {"index": 0, "text": text})
        return {"id": rid, "object": kind, "created": created, "model": served,
                "choices": [{**choice, "finish_reason": finish}], "usage": usage(len(pieces))}

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request):
        return await complete(request, True)

    @app.post("/v1/completions")
    async def completions(request: Request):
        return await complete(request, False)

    return app


def load(cell_path: str):
    """(engine, tokenizer, served name, max_seq) for the cell's decoder."""
    import torch

    cell = Cell.model_validate(json.loads(open(cell_path).read()))
    spec = cell.model
    if cell.device == "cpu":
        # as many intra-op threads as the cores this server was given (see affinity.py)
        torch.set_num_threads(cell.threads.intra if cell.threads and cell.threads.intra
                              else len(os.sched_getaffinity(0)))
    torch.manual_seed(spec.seed)
    module, _ = build_family(spec)
    module = module.to(cell.device)
    engine = Engine(module, cell.device, cell.serving.max_batch_size)
    return engine, Tokenizer(spec.vocab), cell.model_label, spec.max_seq


def main(argv: list[str]) -> None:
    cell_path, _cache_dir, port = argv
    import uvicorn
    engine, tokenizer, served, max_seq = load(cell_path)
    app = make_app(engine, tokenizer, served, max_seq)
    uvicorn.run(app, host="127.0.0.1", port=int(port), log_level="warning", access_log=False)


if __name__ == "__main__":
    main(sys.argv[1:])
