"""``python -m pwdeploy``: the CLI (torchrun starts its ranks this way: ``torchrun ... -m pwdeploy compress``)."""

from .cli import run

run()
