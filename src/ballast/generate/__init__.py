"""Generators: stages that write new records (Self-Instruct, weak-model responses)."""
