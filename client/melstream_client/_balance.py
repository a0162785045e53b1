"""Several replicas behind one :class:`~melstream_client.Client`: which addresses a ``url`` names, which replica
the next stream goes to, and which failures another replica may retry.

A stream is retried on another replica only while nothing of it has reached the caller: a retry after a chunk
was yielded would make the caller hear the start of the utterance twice.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Sequence

from melstream_client.errors import ClientError, ServerUnavailableError

#: gRPC target schemes whose resolver may name several addresses (``dns:///tts.internal:8001``,
#: ``ipv4:10.0.0.1:8001,10.0.0.2:8001``): one channel, balanced per call by gRPC itself
BALANCED_SCHEMES = ("dns:", "ipv4:", "ipv6:")


def parse_targets(url: str | Sequence[str]) -> tuple[str, ...]:
    """The replicas ``url`` names, in order: a ``"host:port"``, a list or tuple of them, one string of them
    separated by commas, or one gRPC target with a scheme (``dns:///name:port``; an ``ipv4:`` list keeps its
    commas, they are the resolver's).  A ``ValueError`` names what is wrong."""
    if isinstance(url, str):
        text = url.strip()
        parts = [text] if is_balanced_target(text) else text.split(",")
    elif isinstance(url, Sequence):
        parts = list(url)
        if not all(isinstance(p, str) for p in parts):
            raise ValueError(f"server addresses must be strings like 'host:port', not {url!r}")
    else:
        raise ValueError(f"a server address is a 'host:port' string or a list of them, not {url!r}")
    targets = tuple(p.strip() for p in parts)
    if not targets or any(not t for t in targets):
        raise ValueError(f"no server address (or an empty one) in {url!r}: expected 'host:port', "
                         "'host1:port1,host2:port2' or 'dns:///name:port'")
    return targets


def is_balanced_target(target: str) -> bool:
    """Whether ``target`` is a gRPC target whose channel round-robins calls over the addresses it resolves to."""
    return target.startswith(BALANCED_SCHEMES)


def is_retryable(error: ClientError) -> bool:
    """Whether a stream refused with ``error`` before its first chunk may go to another replica: the replica
    could not be reached, is being brought back, or is at capacity (:class:`ServerUnavailableError` and its
    :class:`~melstream_client.errors.ServerBusyError`).  Input errors and unknown voices would fail alike anywhere;
    a timeout has already spent the caller's time."""
    return isinstance(error, ServerUnavailableError)


class RoundRobin:
    """The order in which a new stream tries the replicas: each stream starts one replica further than the
    one before, then goes on around the ring, each replica at most once."""

    def __init__(self, n: int) -> None:
        if n < 1:
            raise ValueError(f"round robin over {n} replicas")
        self.n = n
        self._next = itertools.count()
        self._lock = threading.Lock()  # itertools.count is atomic in CPython, not by contract

    def order(self, *, retries: int) -> list[int]:
        """Replica indexes for one stream: the first try and up to ``retries`` more, none twice."""
        with self._lock:
            start = next(self._next) % self.n
        return [(start + i) % self.n for i in range(min(1 + max(retries, 0), self.n))]
