"""Runs `experiments/configs/smic_bilstm.py` (see its docstring): `python -m experiments.smic_bilstm [--config=...:preset]`."""

from experiments import cli

if __name__ == "__main__":
    cli.main("smic_bilstm")
