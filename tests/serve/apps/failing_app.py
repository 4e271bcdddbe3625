def wsgi(environ, start_response):
    raise RuntimeError("handler bug")


async def asgi(scope, receive, send):
    if scope["type"] == "lifespan":
        return
    raise RuntimeError("handler bug")
