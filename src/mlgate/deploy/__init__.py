"""Deployment artefacts generated from mlgate's settings (``mlgate deploy``): no web stack imported."""
