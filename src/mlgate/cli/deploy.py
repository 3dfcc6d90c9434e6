"""``mlgate deploy``: deployment artefacts (``mlgate deploy aws --out DIR``: a SAM template)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from mlgate.cli.common import console

__all__ = ["deploy_app"]

deploy_app = typer.Typer(help="Generate deployment artefacts (AWS SAM template).", no_args_is_help=True)


@deploy_app.command("aws")
def aws_command(
    out: Annotated[Path, typer.Option("--out", help="directory for template.yaml and README.md")] = Path(
        "deploy-aws"
    ),
) -> None:
    """Write an AWS SAM template: Lambda (container image) behind API Gateway with usage plans."""
    from mlgate.deploy.aws import write

    for path in write(out):
        console.print(f"wrote {path}")
    console.print("validate: cfn-lint " + str(out / "template.yaml"))
