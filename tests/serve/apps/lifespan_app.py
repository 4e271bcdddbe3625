import os
import sys

started = []


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                if os.environ.get("LIFESPAN_FAIL"):
                    await send({"type": "lifespan.startup.failed", "message": "no database"})
                    return
                started.append(True)
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                print("LIFESPAN SHUTDOWN", flush=True)
                sys.stdout.flush()
                await send({"type": "lifespan.shutdown.complete"})
                return
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"started=%d" % len(started)})
