"""melstream's client library: stream mel frames from a melstream server over gRPC or HTTP (SSE).

    from melstream.client import Client
    client = Client("localhost:8001")
    for mel in client.stream("Hello there.", voice="fastvoice"):   # [frames, 80] float32 chunks
        ...
    whole = client.synthesize("Hello there.", voice="fastvoice")

``remote_pipeline(voice)`` rebuilds the voice's stack from the addon JSON the server publishes,
with its networks bound to the server's network models.
"""

from melstream.client.grpc import Client, stream, synthesize
from melstream.client.http import HttpClient

__all__ = ["Client", "HttpClient", "stream", "synthesize"]
