"""A BERT-style Transformer encoder built from plain ops, so every exporter and runtime takes it."""

from __future__ import annotations

import math

import torch
import torch.nn as nn


class _Layer(nn.Module):
    def __init__(self, hidden, heads):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(hidden, 3 * hidden)
        self.proj = nn.Linear(hidden, hidden)
        self.ln1 = nn.LayerNorm(hidden)
        self.ff = nn.Sequential(nn.Linear(hidden, 4 * hidden), nn.GELU(), nn.Linear(4 * hidden, hidden))
        self.ln2 = nn.LayerNorm(hidden)

    def forward(self, x):
        b, s, h = x.shape
        d = h // self.heads
        q, k, v = self.qkv(x).reshape(b, s, 3, self.heads, d).permute(2, 0, 3, 1, 4)
        att = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(d), dim=-1)
        x = self.ln1(x + self.proj((att @ v).transpose(1, 2).reshape(b, s, h)))
        return self.ln2(x + self.ff(x))


class Encoder(nn.Module):
    def __init__(self, layers, hidden, heads, seq_len, vocab):
        super().__init__()
        self.tok = nn.Embedding(vocab, hidden)
        self.pos = nn.Parameter(torch.randn(1, seq_len, hidden) * 0.02)
        self.layers = nn.ModuleList(_Layer(hidden, heads) for _ in range(layers))

    def forward(self, input_ids):
        x = self.tok(input_ids) + self.pos
        for layer in self.layers:
            x = layer(x)
        return x


def build_encoder(layers, hidden, heads, seq_len, vocab):
    return Encoder(layers, hidden, heads, seq_len, vocab)
