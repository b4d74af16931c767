#!/usr/bin/env bash
# On a machine with NVIDIA GPUs and TensorFlow built for them: the GPU checks of the
# communication work, in under 8 minutes. Run from the repository root:
#     bash benchmarks/gpu_check.sh [CIFAR-10 image folder]   # default: the bundled sample
# 1. gradient communication on the GPUs: buckets and float16/bfloat16 against Keras's path;
# 2. the fused optimizer updates (update-only timings, XLA on the GPU);
# 3. scaling: 1 GPU against MirroredStrategy over the GPUs (NCCL), and 2 workers of 1 GPU
#    each with and without buckets (needs 2 GPUs; skipped on one).
set -euo pipefail
cd "$(dirname "$0")/.."
data=()
if [[ $# -ge 1 ]]; then data=(--data-dir "$1"); fi
export TF_CPP_MIN_LOG_LEVEL=2 PYTHONUNBUFFERED=1
gpus=$(python -c "import tensorflow as tf; print(len(tf.config.list_physical_devices('GPU')))")
echo "TensorFlow sees ${gpus} GPU(s)"
if [[ "${gpus}" -lt 1 ]]; then echo "no GPU: nothing to check here"; exit 1; fi

timeout 150 python benchmarks/gpu_equivalence.py "${data[@]}"
timeout 120 python benchmarks/optimizer_step.py --skip-train-step --names adam radam lookahead_adam fused_adam \
    --update-repeats 3
setups=(single)
if [[ "${gpus}" -ge 2 ]]; then setups+=(mirrored workers workers_buckets workers_buckets_float16); fi
timeout 200 python benchmarks/scaling.py "${data[@]}" --threads 0 --no-cpu --steps 30 --rounds 1 \
    --communication nccl --setups "${setups[@]}"
