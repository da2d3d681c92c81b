"""HTTP/1.1 on asyncio (to Kimi, and for the safe fetcher): kept-alive connections, bodies streamed, abortable."""

from server.upstream.http.client import HttpClient, Resolver
from server.upstream.http.request import UnsendableRequest
from server.upstream.http.response import HttpResponse, Reply

__all__ = ["HttpClient", "HttpResponse", "Reply", "Resolver", "UnsendableRequest"]
