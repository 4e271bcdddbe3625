"""An ASGI example: a FastAPI app. mse-run and mse-test detect ASGI by themselves."""

from fastapi import FastAPI

app = FastAPI()


@app.get("/")
async def hello() -> dict[str, str]:
    return {"message": "Hello world"}


@app.get("/health")
async def health() -> str:
    return "OK"
