"""A deterministic stand-in for a language model: no network, real-looking token counts.

Tokens are counted from words (about 1.3 tokens per word, like common
tokenizers on English); the answer is built from the retrieved passages, so
the same question with the same context gives the same answer. A prompt seen
before is a cache hit: its input tokens count as cached, as provider prompt
caches report them. Latency grows with output tokens, like real decoding.
"""

from __future__ import annotations

import hashlib
import threading
import time
from dataclasses import dataclass

MODEL_NAME = "contrail-standin-1"
PROVIDER = "contrail-demo"
SECONDS_PER_OUTPUT_TOKEN = 0.002
SECONDS_PER_UNCACHED_INPUT_TOKEN = 0.0002
CACHE_SIZE = 1024


def count_tokens(text: str) -> int:
    words = len(text.split())
    return max(1, round(words * 1.3)) if words else 0


@dataclass
class Completion:
    text: str
    input_tokens: int
    output_tokens: int
    cached_tokens: int

    @property
    def cache_hit(self) -> bool:
        return self.cached_tokens > 0


class StandInModel:
    """Answers from the given passages; remembers prompts it has seen (a bounded prompt cache)."""

    def __init__(self, sleep=time.sleep):
        self._seen: dict[str, None] = {}
        self._lock = threading.Lock()
        self._sleep = sleep

    def prompt_for(self, question: str, passages: list[str]) -> str:
        context = "\n".join(f"- {p}" for p in passages) or "- (no sources found)"
        return f"Answer the question using only these sources.\nSources:\n{context}\nQuestion: {question}\n"

    def complete(self, question: str, passages: list[str]) -> Completion:
        prompt = self.prompt_for(question, passages)
        key = hashlib.sha256(prompt.encode()).hexdigest()
        with self._lock:
            hit = key in self._seen
            self._seen[key] = None
            while len(self._seen) > CACHE_SIZE:
                self._seen.pop(next(iter(self._seen)))
        if passages:
            cited = "; ".join(p.split(":")[0] for p in passages[:3])
            text = (f"Based on {len(passages)} source(s) ({cited}), the short answer to "
                    f"\"{question.rstrip('?')}\" is that it depends on the trade-offs each source describes.")
        else:
            text = f"I could not find sources for \"{question.rstrip('?')}\", so I cannot answer reliably."
        input_tokens, output_tokens = count_tokens(prompt), count_tokens(text)
        cached = input_tokens if hit else 0
        self._sleep(output_tokens * SECONDS_PER_OUTPUT_TOKEN
                    + (input_tokens - cached) * SECONDS_PER_UNCACHED_INPUT_TOKEN)
        return Completion(text=text, input_tokens=input_tokens, output_tokens=output_tokens, cached_tokens=cached)
