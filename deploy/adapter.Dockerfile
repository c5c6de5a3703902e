# The OpenAI adapter: FastAPI + tritonclient, no torch. Entrypoint = the README's `python -m client`.
ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm
FROM ${PYTHON_IMAGE}
WORKDIR /app
COPY pyproject.toml README.md ./
# The adapter and the contract it reads: nothing of the export, the runtime or the launcher.
COPY client ./client
COPY contract ./contract
# /keys: where compose's admin-key service writes Triton's admin key (a volume takes this folder's owner)
RUN pip install --no-cache-dir . && useradd --system --uid 10001 adapter && install -d -o 10001 -m 755 /keys
USER 10001
ENV EMBED_HOST=0.0.0.0 EMBED_PORT=30000
EXPOSE 30000
ENTRYPOINT ["python", "-m", "client"]
