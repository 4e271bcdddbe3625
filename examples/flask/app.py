"""The seed's example: a Flask hello world, served by mse-test or inside the enclave by mse-run."""

from flask import Flask, abort

from mse_base import secrets

app = Flask(__name__)


@app.get("/")
def hello() -> str:
    return "Hello world"


@app.get("/health")
def health() -> str:
    return "OK"


@app.get("/demo-secret")
def demo_secret() -> str:
    """A test route for provisioning (README "7. Secrets"): serves back the one secret named
    DEMO_SECRET, so a deployment can be checked end to end. Never serve real secrets."""
    try:
        return str(secrets.get("DEMO_SECRET"))
    except (KeyError, secrets.SecretsUnavailable):
        abort(404, "no DEMO_SECRET was provisioned")
