# Triton with the Python, ONNX Runtime and TensorRT backends, plus the preprocessors' dependencies.
FROM nvcr.io/nvidia/tritonserver:24.10-py3
RUN pip install --no-cache-dir tokenizers==0.23.3 onnxruntime==1.31.1 pillow==13.0.0 numpy==1.26.4
