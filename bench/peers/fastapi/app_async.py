"""Peer: a plain FastAPI app the way a thesis project writes it (pydantic body, ``async def``).

Served with ``uvicorn app_async:app --workers 2`` (FastAPI's documented deployment: one
worker process per core; uvicorn[standard] brings uvloop and httptools).
"""

import os

import numpy as np
import skops.io as sio
from fastapi import FastAPI
from pydantic import BaseModel

_path = os.environ["BENCH_MODEL"]
model = sio.load(_path, trusted=sio.get_untrusted_types(file=_path))
app = FastAPI()


class Temperaturas(BaseModel):
    temperaturas: list[float]


@app.post("/prod")
async def predict(request: Temperaturas) -> dict:
    x = np.array(request.temperaturas).reshape(1, -1)
    y = float(model.predict(x)[0])
    return {"prediccion": round(y, 2), "unidad": "Celsius"}
