"""Runs `experiments/configs/smic_lstm.py` (see its docstring): `python -m experiments.smic_lstm [--config=...:preset]`."""

from experiments import cli

if __name__ == "__main__":
    cli.main("smic_lstm")
