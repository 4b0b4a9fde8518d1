"""Counters for GET /metrics, written in Prometheus' text format (version 0.0.4) by hand: a few
counters and histograms do not need a client library."""

from __future__ import annotations

import threading
import time
from collections import defaultdict

PASS_SEQUENCES_BUCKETS = (1, 2, 4, 8, 16, 32, 64)
SECONDS_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


class Histogram:
    def __init__(self, buckets):
        self.buckets = tuple(buckets)
        self.counts = [0] * len(self.buckets)
        self.count = 0
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.count += 1
        self.sum += value
        for i, b in enumerate(self.buckets):
            if value <= b:
                self.counts[i] += 1

    def lines(self, name: str, labels: str = "") -> list[str]:
        sep = "," if labels else ""
        out = [f'{name}_bucket{{{labels}{sep}le="{b:g}"}} {c}' for b, c in zip(self.buckets, self.counts)]
        out.append(f'{name}_bucket{{{labels}{sep}le="+Inf"}} {self.count}')
        tail = f"{{{labels}}}" if labels else ""
        out += [f"{name}_sum{tail} {self.sum:.6f}", f"{name}_count{tail} {self.count}"]
        return out


class Metrics:
    """Everything /metrics reports; updated from handler threads and the workers."""

    def __init__(self):
        self._lock = threading.Lock()
        self.requests = defaultdict(int)  # (endpoint, status) -> count
        self.pass_sequences = Histogram(PASS_SEQUENCES_BUCKETS)
        self.pass_seconds = Histogram(SECONDS_BUCKETS)
        self.queue_seconds = Histogram(SECONDS_BUCKETS)
        self.request_seconds = Histogram(SECONDS_BUCKETS)
        self.tokens = 0  # tokens committed (all sequences)
        self.completion_tokens = 0  # tokens in answers returned
        self.prompt_tokens = 0
        self._recent: list[tuple[float, int]] = []  # (time, tokens committed) over the last minute
        self.workers = []

    def count_request(self, endpoint: str, status: int) -> None:
        with self._lock:
            self.requests[(endpoint, status)] += 1

    def observe_pass(self, n_seqs: int, seconds: float, committed: int) -> None:
        now = time.monotonic()
        with self._lock:
            self.pass_sequences.observe(n_seqs)
            self.pass_seconds.observe(seconds)
            self.tokens += committed
            self._recent.append((now, committed))
            while self._recent and self._recent[0][0] < now - 60:
                self._recent.pop(0)

    def observe_wait(self, seconds: float) -> None:
        with self._lock:
            self.queue_seconds.observe(seconds)

    def observe_request(self, seconds: float, prompt_tokens: int, completion_tokens: int) -> None:
        with self._lock:
            self.request_seconds.observe(seconds)
            self.prompt_tokens += prompt_tokens
            self.completion_tokens += completion_tokens

    def render(self) -> str:
        now = time.monotonic()
        with self._lock:
            recent = [(t, n) for t, n in self._recent if t >= now - 10]
            rate = sum(n for _, n in recent) / 10.0
            out = ["# HELP dlm_requests_total HTTP requests answered, by endpoint and status.",
                   "# TYPE dlm_requests_total counter"]
            for (ep, status), n in sorted(self.requests.items()):
                out.append(f'dlm_requests_total{{endpoint="{ep}",status="{status}"}} {n}')
            out += ["# HELP dlm_queue_depth Sequences waiting for a place in the forward pass.",
                    "# TYPE dlm_queue_depth gauge"]
            out += [f'dlm_queue_depth{{model="{w.name}"}} {w.queue_depth}' for w in self.workers]
            out += ["# HELP dlm_active_sequences Sequences in the forward pass now.",
                    "# TYPE dlm_active_sequences gauge"]
            out += [f'dlm_active_sequences{{model="{w.name}"}} {w.active}' for w in self.workers]
            out += ["# HELP dlm_pass_sequences Sequences that shared each forward pass.",
                    "# TYPE dlm_pass_sequences histogram", *self.pass_sequences.lines("dlm_pass_sequences"),
                    "# HELP dlm_pass_seconds Wall time of each forward pass.",
                    "# TYPE dlm_pass_seconds histogram", *self.pass_seconds.lines("dlm_pass_seconds"),
                    "# HELP dlm_queue_seconds Time a sequence waited before joining a pass.",
                    "# TYPE dlm_queue_seconds histogram", *self.queue_seconds.lines("dlm_queue_seconds"),
                    "# HELP dlm_request_seconds Time from a request's arrival to its last byte.",
                    "# TYPE dlm_request_seconds histogram", *self.request_seconds.lines("dlm_request_seconds"),
                    "# HELP dlm_tokens_committed_total Canvas positions committed by the engine.",
                    "# TYPE dlm_tokens_committed_total counter", f"dlm_tokens_committed_total {self.tokens}",
                    "# HELP dlm_prompt_tokens_total Prompt tokens of finished requests.",
                    "# TYPE dlm_prompt_tokens_total counter", f"dlm_prompt_tokens_total {self.prompt_tokens}",
                    "# HELP dlm_completion_tokens_total Answer tokens of finished requests.",
                    "# TYPE dlm_completion_tokens_total counter",
                    f"dlm_completion_tokens_total {self.completion_tokens}",
                    "# HELP dlm_tokens_per_second Positions committed per second over the last 10 s.",
                    "# TYPE dlm_tokens_per_second gauge", f"dlm_tokens_per_second {rate:.3f}"]
        return "\n".join(out) + "\n"
