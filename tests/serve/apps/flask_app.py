from flask import Flask, request

app = Flask(__name__)


@app.route("/")
def hello() -> str:
    return "Hello from Flask"


@app.route("/echo", methods=["POST"])
def echo() -> bytes:
    return request.get_data()
