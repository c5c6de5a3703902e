"""The GPU run: what it carries (`bundle.py`), the one command it runs there (`run.sh`)."""
