"""The seed's example: a Flask hello world, served by mse-test or inside the enclave by mse-run."""

from flask import Flask

app = Flask(__name__)


@app.get("/")
def hello() -> str:
    return "Hello world"


@app.get("/health")
def health() -> str:
    return "OK"
