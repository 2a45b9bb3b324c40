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

    app = FastAPI()
    server = _Completions(engine, tokenizer, served, max_seq)

    @app.get("/health")
    def health():
        return {"status": "ok"}

    @app.get("/v1/models")
    def models():
        return {"object": "list", "data": [{"id": served, "object": "model"}]}

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request):
        return await server.complete(request, True)

    @app.post("/v1/completions")
    async def completions(request: Request):
        return await server.complete(request, False)

    return app


def _error(status, message):
    from fastapi.responses import JSONResponse
    return JSONResponse({"error": {"message": message, "code": status}}, status_code=status)


def _prompt(body: dict, chat: bool) -> tuple[str, int, int]:
    """The request's prompt text, max_tokens and min_tokens (raises on a malformed body)."""
    if chat:
        text = "\n".join(str(m.get("content") or "") for m in body["messages"])
    else:
        text = body["prompt"]
        text = " ".join(text) if isinstance(text, list) else str(text)
    return text, int(body.get("max_tokens") or 16), int(body.get("min_tokens") or 0)


class _Reply:
    """The response documents of one request: chunks, the usage, the whole reply."""

    def __init__(self, chat: bool, served: str, prompt_tokens: int):
        self.chat, self.served, self.prompt_tokens = chat, served, prompt_tokens
        self.rid = f"{'chatcmpl' if chat else 'cmpl'}-{os.urandom(8).hex()}"
        self.created = int(time.time())
        self.kind = "chat.completion" if chat else "text_completion"

    def usage(self, n: int) -> dict:
        return {"prompt_tokens": self.prompt_tokens, "completion_tokens": n,
                "total_tokens": self.prompt_tokens + n}

    def chunk(self, text: str, finish) -> dict:
        choice = ({"index": 0, "delta": {"content": text} if text else {},
                   "finish_reason": finish} if self.chat
                  else {"index": 0, "text": text, "finish_reason": finish})
        return {"id": self.rid, "object": self.kind + (".chunk" if self.chat else ""),
                "created": self.created, "model": self.served, "choices": [choice]}

    def usage_chunk(self, n: int) -> dict:
        return {"id": self.rid, "object": self.kind, "choices": [], "model": self.served,
                "usage": self.usage(n)}

    def whole(self, text: str, finish, n: int) -> dict:
        choice = ({"index": 0, "message": {"role": "assistant", "content": text}} if self.chat
                  else {"index": 0, "text": text})
        return {"id": self.rid, "object": self.kind, "created": self.created,
                "model": self.served, "choices": [{**choice, "finish_reason": finish}],
                "usage": self.usage(n)}


class _Completions:
    """`/v1/chat/completions` and `/v1/completions`: a request becomes a sequence for the
    engine, its tokens come back streamed (SSE) or as one reply."""

    def __init__(self, engine: Engine, tokenizer: Tokenizer, served: str, max_seq: int):
        self.engine, self.tokenizer = engine, tokenizer
        self.served, self.max_seq = served, max_seq

    async def complete(self, request, chat: bool):
        from fastapi.responses import StreamingResponse
        try:
            body = await request.json()
            if body.get("model") != self.served:
                return _error(404, f"model '{body.get('model')}' is not served here "
                                   f"(this server serves '{self.served}')")
            text, max_tokens, min_tokens = _prompt(body, chat)
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            return _error(400, f"bad request: {type(exc).__name__}: {exc}")
        ids = self.tokenizer.encode(text) or [EOS]
        if len(ids) + max_tokens > self.max_seq:
            return _error(400, f"{len(ids)} prompt tokens + max_tokens {max_tokens} exceed "
                               f"the model's max_seq {self.max_seq}")
        seq = _Sequence(ids, max_tokens, min_tokens, bool(body.get("ignore_eos")),
                        asyncio.get_running_loop())
        self.engine.submit(seq)
        reply = _Reply(chat, self.served, len(ids))
        if body.get("stream"):
            include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
            return StreamingResponse(self._events(seq, reply, include_usage),
                                     media_type="text/event-stream")
        return await self._whole(seq, reply)

    async def _events(self, seq: _Sequence, reply: _Reply, include_usage: bool):
        n = 0
        while True:
            what, value = await seq.out.get()
            if what == "token":
                n += 1
                data = reply.chunk(self.tokenizer.decode(value), None)
            elif what == "finish":
                data = reply.chunk("", value)
            else:
                data = {"error": {"message": value}}
            yield f"data: {json.dumps(data)}\n\n"
            if what != "token":
                break
        if what == "finish" and include_usage:
            yield f"data: {json.dumps(reply.usage_chunk(n))}\n\n"
        yield "data: [DONE]\n\n"

    async def _whole(self, seq: _Sequence, reply: _Reply):
        pieces = []
        while True:
            what, value = await seq.out.get()
            if what == "token":
                pieces.append(self.tokenizer.decode(value))
            elif what == "finish":
                return reply.whole("".join(pieces), value, len(pieces))
            else:
                return _error(500, value)


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
