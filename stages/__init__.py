"""Thin command-line stages run by `dvc.yaml`: argument parsing, params slicing, exit codes."""
