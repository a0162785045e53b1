# melstream on NVIDIA's Triton container: the image's own tritonserver (Triton 2.51, the server the
# nvidia-pytriton wheel ships) runs the generated model repository with the Python 3.11 backend stub.
# Built and run by docker-compose.yml; `docker-compose --profile gpu build`.
FROM nvcr.io/nvidia/tritonserver:24.10-py3

# The image is Ubuntu 22.04 with Python 3.10; melstream needs 3.11 (jammy universe has it). libpython3.11
# is the shared library the backend stub embeds; espeak-ng is the voices' text front end.
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      python3.11 python3.11-venv libpython3.11 espeak-ng libespeak-ng1 \
 && rm -rf /var/lib/apt/lists/*

ENV VIRTUAL_ENV=/opt/melstream/venv \
    PATH=/opt/melstream/venv/bin:$PATH
RUN python3.11 -m venv /opt/melstream/venv \
 && pip install --no-cache-dir --upgrade pip

# torch first, pinned, CPU build: networks run in ONNX Runtime (on the GPU below); torch only serves the
# in-process TorchRunner, and its CUDA build would add a second CUDA stack of several GB.
RUN pip install --no-cache-dir torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu

WORKDIR /opt/melstream/src
COPY pyproject.toml README.md ./
COPY client/ client/
COPY melstream/ melstream/
COPY python_backends/ python_backends/
COPY addons/ addons/
COPY model_repository/ model_repository/
COPY loadtests/ loadtests/

# Editable: `melstream build-repo` finds python_backends/ next to the package source, not in site-packages.
# locust pinned to the version the load tests were written against.
# The client distribution first: melstream depends on it, and it is on no index.
RUN pip install --no-cache-dir -e /opt/melstream/src/client \
 && pip install --no-cache-dir -e /opt/melstream/src locust==2.47.0

# ONNX Runtime with CUDA: onnxruntime-gpu installs the same `onnxruntime` module, so the CPU package goes
# first (pip will then report melstream's `onnxruntime` requirement as unmet; the module is there).
# 1.24 is a CUDA 12 + cuDNN 9 build, which is what this image ships (CUDA 12.6, cuDNN 9), so it uses the
# image's libraries; the newest releases (1.31) are CUDA 13 builds and would need a newer host driver.
RUN pip uninstall -y onnxruntime \
 && pip install --no-cache-dir onnxruntime-gpu==1.24.1

# The image's stub embeds Python 3.10; the wheel's 3.11 stub makes the image's Python backend run this venv.
RUN cp /opt/melstream/venv/lib/python3.11/site-packages/pytriton/tritonserver/python_backend_stubs/3.11/triton_python_backend_stub \
       /opt/tritonserver/backends/python/triton_python_backend_stub

# The gpu repository is generated here (the cpu one is model_repository/, committed); paths to the ONNX
# files are relative, so addons/ must stay where it is.
RUN melstream build-repo --profile gpu --out /opt/melstream/model_repository_gpu

# The deployment profile, one variable (README "Profiles"): `melstream serve` (re)writes its --repo from its
# --addons for $MELSTREAM_PROFILE when the container starts, on the host it will run on, and for gpu-trt builds
# the TensorRT plans for that host's GPUs there (`melstream build-plans`: a plan does not carry over between GPU
# types or TensorRT versions, and no GPU is present at image build).  gpu-ort-trt and gpu-trt need this image's
# own onnxruntime and tensorrt backends (the pytriton wheel has the Python backend only).  docker-compose.yml
# sets it per service (gpu, cpu); unset, serve serves --repo as built above.
ENV MELSTREAM_PROFILE=gpu

EXPOSE 8000 8001 8002 8003 8089
# NVIDIA's entrypoint stays (driver checks, banner); this is the GPU service's command.
CMD ["/opt/melstream/venv/bin/melstream", "serve", "--repo", "/opt/melstream/model_repository_gpu", "--triton-home", "/opt/tritonserver"]
