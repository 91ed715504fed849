#!/usr/bin/env bash
# The device checks of the open speed issue, as ONE command for the next session lent a GPU (the device
# tool: 15 minutes in all, starts included). Rows are written to $OUT as they come, so a cut run keeps them.
#
# Prepare on the development machine, once (nothing here is committed):
#   mkdir -p .device/shared && cp -r ../shared/corpus ../shared/tokenizers .device/shared/
#   grep -qx '/.device/' .git/info/exclude || echo /.device/ >> .git/info/exclude
#   fathom plan --config configs/qwen2.5-7b-maritime-32k.yaml --gpu h200-141gb --simulate --json > .device/auto.json
# Then: device run, command "bash bench/gpu_session.sh", carry [".device"], timeout_s 540.
# Smoke test anywhere: SHAPE=tiny OUT=/tmp/smoke bash bench/gpu_session.sh
#
# What it measures (Qwen2.5-7B shape, random weights, the image's torch; see bench/gpu.py):
#   1. whole rows vs rows packed from the maritime corpus's document lengths at 4K, through fathom's
#      attention (auto: flash-attn, else torch's varlen) and through SDPA with the T x T mask;
#   2. train.memory auto against every layer checkpointed at 4K / 16K / 32K: tokens/s, MFU and HFU,
#      memory beside the planner and the simulation.
# The quality bench's GPU scale is bench/gpu_quality.sh (SmolLM2's weights over two calls). Both scripts
# take most of a session's 15 device minutes: a lent session runs one, bench/gpu_quality.sh first.
set -u
OUT=${OUT:-/tmp/fathom-gpu-out}
mkdir -p "$OUT"
export PYTHONPATH="$PWD/src:${PYTHONPATH:-}"
export FATHOM_SHARED="$PWD/.device/shared"
PY=${PYTHON:-python3}
{
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
  $PY -c "import torch, transformers, peft; print('torch', torch.__version__, 'transformers', transformers.__version__, 'peft', peft.__version__)"
  $PY -c "import torch; from fathom.model.attention import varlen_available; print('varlen:', varlen_available(torch.device('cuda')))"
} > "$OUT/env.txt" 2>&1

simulated=()
[ -f .device/auto.json ] && simulated=(--simulated "none+auto=.device/auto.json")

timeout 200 $PY bench/gpu.py --shape "${SHAPE:-Qwen/Qwen2.5-7B}" --steps 2 --out "$OUT/packed.jsonl" \
  --runs "none:4096;none+packed:4096;none+packed+mask:4096" > "$OUT/packed.log" 2>&1
timeout 300 $PY bench/gpu.py --shape "${SHAPE:-Qwen/Qwen2.5-7B}" --steps 2 --out "$OUT/memory.jsonl" "${simulated[@]}" \
  --runs "none+auto:4096,16384,32768;none:4096,16384,32768" > "$OUT/memory.log" 2>&1
tail -n 20 "$OUT"/*.log
