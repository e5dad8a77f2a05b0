#!/usr/bin/env bash
# One prepared run for a session lent the GPU machine (the device tool), from the repository
# root, on a machine whose python3 has torch with CUDA: the GPU's facts, the CUDA tests
# (tests/test_cuda.py and the device-parametrized ones), then the CIFAR-10-shaped model's
# training images/s (benchmarks/gpu_images.py). Each part's output goes to $OUT (or ./gpu-out).
set -uo pipefail
out=${OUT:-gpu-out}
mkdir -p "$out"
export PYTHONPATH=$PWD/src:$PWD/benchmarks PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$out/gpu.txt"
python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name())" \
    | tee -a "$out/gpu.txt"
python3 -m pytest -q -n0 -p no:cacheprovider -o addopts="" -k "cuda" \
    tests/test_cuda.py tests/test_flows.py 2>&1 | tee "$out/cuda_tests.txt" | tail -15
# the paper's CIFAR-10 model (2 scales) at its batch of 64, eager, then compiled in bf16 with a
# time limit (compiling the 4-scale model had not finished after 7 minutes); then a GPU-sized
# batch of 256
python3 benchmarks/gpu_images.py --out "$out/gpu_images.jsonl" --settings "eager fp32" "eager bf16"
timeout 300 python3 benchmarks/gpu_images.py --out "$out/gpu_images.jsonl" --settings "compile bf16"
python3 benchmarks/gpu_images.py --out "$out/gpu_images.jsonl" --batch-size 256 \
    --settings "eager fp32" "eager bf16"
# cuDNN's TF32 default and a float32 round trip (tests/test_cuda.py turns TF32 off for its check)
python3 benchmarks/gpu_tf32.py | tee "$out/gpu_tf32.txt"
