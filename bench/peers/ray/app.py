"""Peer: Ray Serve, two replicas (one per core), the HTTP proxy on loopback.

Run: ``python app.py --port N``. ``POST /prod`` takes ``{"temperaturas": [60 floats]}``.
"""

import argparse
import os
import signal
import threading

import numpy as np
import ray
import skops.io as sio
from ray import serve
from starlette.requests import Request


@serve.deployment(num_replicas=2, ray_actor_options={"num_cpus": 1})
class Temperatura:
    def __init__(self) -> None:
        path = os.environ["BENCH_MODEL"]
        self.model = sio.load(path, trusted=sio.get_untrusted_types(file=path))

    async def __call__(self, request: Request) -> dict:
        body = await request.json()
        x = np.asarray(body["temperaturas"], dtype=np.float64).reshape(1, -1)
        return {"prediccion": round(float(self.model.predict(x)[0]), 2), "unidad": "Celsius"}


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    serve.start(http_options={"host": "127.0.0.1", "port": args.port})
    serve.run(Temperatura.bind(), route_prefix="/prod")
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    stop.wait()
    serve.shutdown()
    ray.shutdown()
