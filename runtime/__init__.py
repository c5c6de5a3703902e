"""Code that runs inside Triton's Python backend.

`export` copies this package next to each generated `model.py`, and imports the
same modules itself for validation, so the served path and the checks share one
implementation. Nothing here imports `triton_python_backend_utils` except the
thin `*_model.py` shells.
"""
