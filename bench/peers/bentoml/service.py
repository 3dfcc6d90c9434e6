"""Peer: BentoML 1.4 service (new-style ``@bentoml.service``), 2 workers for 2 cores.

Run: ``bentoml serve service:Temperatura --port N`` from this folder. ``POST /predict`` takes
``{"temperaturas": [60 floats]}`` (BentoML maps JSON fields to the API's parameters).
"""

import os

import bentoml
import numpy as np
import skops.io as sio


@bentoml.service(workers=2, resources={"cpu": "2"}, traffic={"timeout": 60})
class Temperatura:
    def __init__(self) -> None:
        path = os.environ["BENCH_MODEL"]
        self.model = sio.load(path, trusted=sio.get_untrusted_types(file=path))

    @bentoml.api
    def predict(self, temperaturas: list[float]) -> dict:
        y = float(self.model.predict(np.array(temperaturas).reshape(1, -1))[0])
        return {"prediccion": round(y, 2), "unidad": "Celsius"}
