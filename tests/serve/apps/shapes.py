"""Callables of every shape an app can take, for interface detection."""


def wsgi_function(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"wsgi function"]


async def asgi_function(scope, receive, send):
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"asgi function"})


class WSGIClass:
    """PEP 3333: the class itself is the app; each request instantiates it."""

    def __init__(self, environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])

    def __iter__(self):
        yield b"wsgi class"


class ASGI2Class:
    """ASGI 2: instantiated with the scope, then awaited with (receive, send)."""

    def __init__(self, scope):
        self.scope = scope

    async def __call__(self, receive, send):
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"asgi2 class"})


class _ASGIInstance:
    async def __call__(self, scope, receive, send):
        await asgi_function(scope, receive, send)


class _WSGIInstance:
    def __call__(self, environ, start_response):
        return wsgi_function(environ, start_response)


class _SyncASGIMiddleware:
    """A sync __call__ that returns the awaitable, as some ASGI middlewares do."""

    def __call__(self, scope, receive, send):
        return asgi_function(scope, receive, send)


asgi_instance = _ASGIInstance()
wsgi_instance = _WSGIInstance()
sync_asgi_middleware = _SyncASGIMiddleware()


class Holder:
    app = wsgi_instance


not_callable = {"app": 1}


def wrong_arity(a, b, c, d):
    return None


def wsgi_with_option(environ, start_response, debug=False):
    return wsgi_function(environ, start_response)


def wsgi_star_args(*args):
    return wsgi_function(*args)
