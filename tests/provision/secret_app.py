"""The Flask test app for provisioning: serves back what was pushed (packed into a code tar)."""

import os
from pathlib import Path

from flask import Flask

from mse_base import secrets

# Proves whether the app was ever imported: the tests look for this file.
_marker = os.environ.get("MSE_TEST_MARKER")
if _marker:
    Path(_marker).write_text("imported")

app = Flask(__name__)


@app.route("/")
def hello():
    return "Hello from Flask in the enclave"


@app.route("/secret/<name>")
def secret(name):
    return str(secrets.get(name))


@app.route("/secrets-file")
def secrets_file():
    return Path(os.environ["MSE_SECRETS"]).read_text()
