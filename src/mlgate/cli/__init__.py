"""The ``mlgate`` command line (Typer + Rich).

``mlgate serve`` runs the server; the other commands talk to a running server over HTTP
(``--url``, default http://127.0.0.1:8000) with the admin key from ``--api-key`` or
``MLGATE_API_KEY``. Split by concept: :mod:`mlgate.cli.main` (the app, ``serve``,
``predict``), ``models``, ``access`` (keys, plans, users), ``workflows``, and ``common``
(console, client, error checks).
"""

from mlgate.cli.main import app, main
from mlgate.cli.ray import ray_app

app.add_typer(ray_app, name="ray")  # mlgate ray deploy|status|delete (issue 18; mlgate[ray])

__all__ = ["app", "main"]
