# Triton on the CPU, anywhere: the `tritonserver` of the nvidia-pytriton wheel (Python backend only)
# serving `--target local` and `--target openvino` exports, under the supervisor of launcher/ (see
# launcher/container.py).
ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm
FROM ${PYTHON_IMAGE}
# Pinned as in pyproject.toml: the server, and what the preprocessors and the CPU encoder import.
RUN pip install --no-cache-dir nvidia-pytriton==0.7.0 tokenizers==0.23.3 onnxruntime==1.31.1 openvino==2026.4.1 \
        pillow==13.0.0 numpy==1.26.4
WORKDIR /app
COPY launcher/__init__.py launcher/processes.py launcher/shm.py launcher/supervisor.py launcher/tritonserver.py \
     launcher/container.py launcher/direct.py launcher/hidden_key.py ./launcher/
# The contract (the admin header) is the same package as the copy beside each model.py: no shadowing.
COPY contract ./contract
# Not root: the server needs only /tmp (its backends copy) and /dev/shm; the repository is mounted read-only.
RUN useradd --system --uid 10002 triton
USER 10002
EXPOSE 8000 8001 8002
ENTRYPOINT ["python", "-m", "launcher.container"]
