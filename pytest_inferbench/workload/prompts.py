"""Prompts for generative serving: what each request asks, built before the run.

- Synthetic text to an exact input length: words drawn (seeded) from a vocabulary of common
  English words, each written with a leading space, which the usual BPE and SentencePiece
  tokenizers encode as one token each; the plugin's own server counts one token per word.
  For a server whose tokenizer we do not know, the length actually seen is the server's
  `usage.prompt_tokens`, checked against the target after the run (a chat template adds a
  constant number of tokens: the offset and its spread are reported apart).
- Lengths: a fixed count, or {mean, stdev} (normal, rounded, at least 1), for the input and
  for the output; the output length becomes `max_tokens` (with `ignore_eos: true` and
  `min_tokens` where the server accepts them, so the server cannot stop early).
- shared_prefix: the first N tokens of every prompt are the same (a system prompt; what a
  prefix cache would reuse). input_tokens counts them.
- dataset: a JSONL file, one request a line: {"prompt": "..."} or {"messages": [...]}, with an
  optional "output_tokens" (or "max_tokens"); lines are used in order, cyclically.
- turns: multi-turn conversations: the k-th turn carries the k-1 earlier exchanges (synthetic
  user prompts and assistant replies of the drawn lengths) before its new user prompt, so the
  prompt grows as a chat does and consecutive turns share their history as a prefix.

Bodies are serialized here, once, so that sending a request costs the client no JSON work.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..models.tokenizer import WORDS
from ..serving.openai_client import request_body
from ..spec.prompts import Prompts

MAX_PREPARED = 4096      # distinct bodies prepared; a longer run cycles through them


@dataclass(frozen=True)
class Prepared:
    """One request ready to send."""
    body: bytes
    max_tokens: int | None
    expected_prompt_tokens: int | None     # None: not built to a count (dataset)
    conversation: int | None = None
    turn: int | None = None


def synthetic_text(rng: np.random.Generator, tokens: int) -> str:
    """`tokens` words of the vocabulary, each with a leading space (one token each)."""
    picks = rng.integers(0, len(WORDS), tokens)
    return "".join(" " + WORDS[k] for k in picks)


def prepare(prompts: Prompts, api: str, model: str, stream: bool, count: int, seed: int,
            extras_for=None) -> list[Prepared]:
    """`count` requests (at most MAX_PREPARED: the run cycles through them).
    extras_for(max_tokens) -> dict of extra body fields (ignore_eos, min_tokens) or None."""
    count = max(1, min(count, MAX_PREPARED))
    out = []
    for prompt, max_tokens, expected, conv, turn in _requests(prompts, count, seed):
        extras = extras_for(max_tokens) if extras_for and max_tokens is not None else None
        body = request_body(api, model, prompt, max_tokens, stream, extras)
        out.append(Prepared(json.dumps(body).encode(), max_tokens, expected, conv, turn))
    return out


def _requests(prompts: Prompts, count: int, seed: int):
    if prompts.dataset:
        yield from _dataset(prompts, count)
        return
    rng = np.random.default_rng(seed)
    prefix = synthetic_text(np.random.default_rng([seed, 1]), prompts.shared_prefix)
    turns = prompts.turns
    conversations = -(-count // turns)
    ins = prompts.input_tokens.draw(rng, conversations * turns)
    outs = prompts.output_tokens.draw(rng, conversations * turns)
    made = 0
    for c in range(conversations):
        history, history_tokens = [], 0
        for t in range(turns):
            k = c * turns + t
            n_in = int(ins[k])
            unique = max(1, n_in - prompts.shared_prefix) if t == 0 else n_in
            text = (prefix if t == 0 else "") + synthetic_text(rng, unique)
            expected = history_tokens + (prompts.shared_prefix if t == 0 else 0) + unique
            message = {"role": "user", "content": text}
            prompt = history + [message] if turns > 1 else text
            yield prompt, int(outs[k]), expected, (c if turns > 1 else None), \
                (t if turns > 1 else None)
            made += 1
            if made == count:
                return
            # the next turn replays this one with a synthetic assistant reply of its length
            reply = synthetic_text(rng, int(outs[k]))
            history = history + [message, {"role": "assistant", "content": reply}]
            history_tokens = expected + int(outs[k])


def _dataset(prompts: Prompts, count: int):
    rows = load_dataset(prompts.dataset)
    for i in range(count):
        row = rows[i % len(rows)]
        max_tokens = row.get("output_tokens", row.get("max_tokens"))
        if max_tokens is None:
            max_tokens = prompts.output_tokens.mean
        yield row.get("messages") or row["prompt"], int(max_tokens), None, None, None


def load_dataset(path: str | Path) -> list[dict]:
    """JSONL rows with "prompt" (a string) or "messages" (chat messages); errors name the
    line."""
    rows = []
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}:{lineno}: not JSON: {exc.msg}") from None
            if not isinstance(row, dict) or not (
                    isinstance(row.get("prompt"), str) or isinstance(row.get("messages"), list)):
                raise ValueError(f"{path}:{lineno}: expected an object with \"prompt\" (a "
                                 f"string) or \"messages\" (a list of chat messages)")
            for key in ("output_tokens", "max_tokens"):
                v = row.get(key)
                if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
                    raise ValueError(f"{path}:{lineno}: \"{key}\" must be a positive integer")
            rows.append(row)
    if not rows:
        raise ValueError(f"{path}: no requests in the dataset")
    return rows

