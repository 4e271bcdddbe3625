import threading

# Both requests must be inside the app at once to pass the barrier: it proves that a WSGI
# handler blocking on I/O does not hold the others up.
barrier = threading.Barrier(2, timeout=20)


def app(environ, start_response):
    try:
        barrier.wait()
    except threading.BrokenBarrierError:
        start_response("503 Service Unavailable", [("Content-Type", "text/plain")])
        return [b"alone"]
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"together"]
