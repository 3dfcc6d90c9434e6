"""Cardiac state service (``cardiaco``): an LSTM over ICU vital signs, four states.

Folder layout: ``generator.py`` (synthetic vitals), ``processing.py`` (SPEC §2.4
pre-processing), ``recipe.py`` (training + ONNX export), ``service.py`` (processor and
original routes), ``byo.py`` (bring your own Keras/ONNX LSTM), ``MODEL_CARD.md``.
"""
