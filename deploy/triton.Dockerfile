# Triton with the Python, ONNX Runtime and TensorRT backends, plus the preprocessors' dependencies.
ARG NGC_RELEASE=25.10
FROM nvcr.io/nvidia/tritonserver:${NGC_RELEASE}-py3
ENV PIP_BREAK_SYSTEM_PACKAGES=1
RUN pip install --no-cache-dir tokenizers==0.23.3 onnxruntime==1.31.1 openvino==2026.4.1 pillow==13.0.0 \
        numpy==1.26.4
# The NGC image's own unprivileged user.
USER triton-server
