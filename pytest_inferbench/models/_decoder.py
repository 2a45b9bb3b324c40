"""A GPT-style decoder with deterministic random weights and a KV cache, for generative
serving benchmarks that need nothing downloaded: pre-norm blocks (causal self-attention,
GELU MLP), learned positions, an LM head tied to the embedding, greedy decoding.

`forward(ids)` runs a whole sequence without a cache (what the other runtimes call);
`prefill(ids)` and `step(token, cache)` are what the plugin's OpenAI-compatible server uses.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


class _Block(nn.Module):
    def __init__(self, hidden: int, heads: int):
        super().__init__()
        self.heads = heads
        self.ln1, self.ln2 = nn.LayerNorm(hidden), nn.LayerNorm(hidden)
        self.qkv = nn.Linear(hidden, 3 * hidden)
        self.proj = nn.Linear(hidden, hidden)
        self.mlp = nn.Sequential(nn.Linear(hidden, 4 * hidden), nn.GELU(),
                                 nn.Linear(4 * hidden, hidden))

    def forward(self, x, cache=None):
        """x: (batch, new, hidden); cache: (k, v) of the earlier positions or None.
        Returns the output and the cache extended by the new positions."""
        b, n, h = x.shape
        q, k, v = self.qkv(self.ln1(x)).split(h, dim=2)
        shape = (b, n, self.heads, h // self.heads)
        q, k, v = (t.view(shape).transpose(1, 2) for t in (q, k, v))
        if cache is not None:
            k, v = torch.cat([cache[0], k], 2), torch.cat([cache[1], v], 2)
        # causal over the new positions; every earlier (cached) position is visible
        attn = F.scaled_dot_product_attention(q, k, v, is_causal=cache is None and n > 1)
        x = x + self.proj(attn.transpose(1, 2).reshape(b, n, h))
        return x + self.mlp(self.ln2(x)), (k, v)


class Decoder(nn.Module):
    def __init__(self, layers: int, hidden: int, heads: int, vocab: int, max_seq: int):
        super().__init__()
        self.max_seq = max_seq
        self.embed = nn.Embedding(vocab, hidden)
        self.pos = nn.Embedding(max_seq, hidden)
        self.blocks = nn.ModuleList(_Block(hidden, heads) for _ in range(layers))
        self.ln = nn.LayerNorm(hidden)
        for p in self.parameters():     # small weights: stable activations over many layers
            if p.dim() > 1:
                nn.init.normal_(p, std=0.02)

    def _run(self, ids, start: int, caches):
        pos = torch.arange(start, start + ids.shape[1], device=ids.device)
        x = self.embed(ids) + self.pos(pos)
        new = []
        for block, cache in zip(self.blocks, caches or [None] * len(self.blocks)):
            x, c = block(x, cache)
            new.append(c)
        return self.ln(x) @ self.embed.weight.T, new

    def forward(self, input_ids):
        """Logits of every position (batch, seq, vocab), no cache."""
        return self._run(input_ids, 0, None)[0]

    @torch.inference_mode()
    def prefill(self, ids: torch.Tensor):
        """ids: (1, n). Returns (next token id, cache)."""
        logits, cache = self._run(ids, 0, None)
        return int(logits[0, -1].argmax()), cache

    @torch.inference_mode()
    def step(self, token: int, position: int, cache):
        """One greedy step: the token at `position` in, (next token id, cache) out."""
        ids = torch.tensor([[token]], device=cache[0][0].device)
        logits, cache = self._run(ids, position, cache)
        return int(logits[0, -1].argmax()), cache


def build_decoder(layers: int, hidden: int, heads: int, vocab: int, max_seq: int) -> Decoder:
    """Weights from torch's current RNG (the caller seeds it: artifacts.py, the server)."""
    return Decoder(layers, hidden, heads, vocab, max_seq).eval()
