"""The word-level tokenizer of the plugin's generated decoder, and the vocabulary synthetic
prompts are written in: each word is one token here and, with its leading space, one token in
GPT-2/Llama/Mistral-style vocabularies, so a prompt of N words is N tokens on either server."""

from __future__ import annotations

import zlib

# Common English words, each one token with a leading space in GPT-2/Llama/Mistral-style
# vocabularies (and one whitespace-separated token for the plugin's own server).
WORDS = tuple("""the of and to in is was for on that with as by at from his her an are it
this be or not but had which have one you were all their there we she been has when who more
they would will its so can no up out into other time than some what about new only then
first any also made two may like after over well most even many back years just where much
good way down should because each those people how too work year day could still great own
world life last long make must under never here old state while both same part place home
area end water land high small large next four set hand house light city play point body
line field week young power name war head side word order""".split())


class Tokenizer:
    def __init__(self, vocab: int):
        self.vocab, self.words = vocab, WORDS

    def encode(self, text: str) -> list[int]:
        return [zlib.crc32(w.encode()) % (self.vocab - 1) + 1 for w in text.split()]

    def decode(self, token: int) -> str:
        return " " + self.words[token % len(self.words)]
