"""Runs `experiments/configs/smic_vggface2.py` (see its docstring): `python -m experiments.smic_vggface2 [--config=...:preset]`."""

from experiments import cli

if __name__ == "__main__":
    cli.main("smic_vggface2")
