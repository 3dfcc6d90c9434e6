"""Peer: LitServe with its documented CPU settings: ``accelerator="cpu"``, ``workers_per_device``
= cores (2), ``fast_queue=True`` (ZeroMQ, "for >100 RPS"), one API server per worker (default).

Run: ``python server.py --port N``. ``POST /predict`` takes ``{"temperaturas": [60 floats]}``.
"""

import argparse
import os

import litserve as ls
import numpy as np
import skops.io as sio


class Temperatura(ls.LitAPI):
    def setup(self, device):
        path = os.environ["BENCH_MODEL"]
        self.model = sio.load(path, trusted=sio.get_untrusted_types(file=path))

    def decode_request(self, request):
        return np.asarray(request["temperaturas"], dtype=np.float64).reshape(1, -1)

    def predict(self, x):
        return float(self.model.predict(x)[0])

    def encode_response(self, output):
        return {"prediccion": round(output, 2), "unidad": "Celsius"}


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    server = ls.LitServer(Temperatura(), accelerator="cpu", devices=1, workers_per_device=2, fast_queue=True)
    server.run(host="127.0.0.1", port=args.port, log_level="warning", generate_client_file=False)
