# `python -m export` inside the NGC PyTorch image of the serving release: CUDA PyTorch to
# validate against, and the same TensorRT version as tritonserver:<NGC_RELEASE>-py3.
ARG NGC_RELEASE=25.10
FROM nvcr.io/nvidia/pytorch:${NGC_RELEASE}-py3
# TensorRT of tritonserver:25.10-py3, from NGC's release notes (read, not run here). The export refuses
# to build a plan with any other version (export/tensorrt.py: check_tensorrt), since the server could not load it.
ARG SERVING_TENSORRT_VERSION=10.13.3
ENV SERVING_TENSORRT_VERSION=${SERVING_TENSORRT_VERSION} PIP_BREAK_SYSTEM_PACKAGES=1
# The image's own torch and tensorrt stay; everything else is pinned as in pyproject.toml. NGC images
# set PIP_CONSTRAINT=/etc/pip/constraint.txt, which pins pillow, protobuf, onnx and others to the
# image's versions and would refuse ours: these pins are what the export is tested with, so they are
# installed outside the constraint (PIP_CONSTRAINT emptied for this one command). torch and tensorrt
# are not in the list, so the image's own stay, and the constraint still holds for anything else.
RUN PIP_CONSTRAINT='' pip install --no-cache-dir transformers==5.23.0 onnx==1.23.2 onnxscript==0.7.2 \
        protobuf==6.33.6 rich==15.0.0 tokenizers==0.23.3 onnxruntime==1.31.1 openvino==2026.4.1 \
        pillow==13.0.0 "tritonclient[grpc]==2.73.0"
WORKDIR /app
COPY contract ./contract
COPY export ./export
COPY graphs ./graphs
COPY runtime ./runtime
ENTRYPOINT ["python", "-m", "export"]
