#!/usr/bin/env bash
# GPU check (<= 8 minutes on one GPU): the same harvest (tasks, model, seeds, settings) through the transformers
# backend and through the vLLM backend (`--agent vllm:...`), printed side by side: conversations/min, generated
# tokens/s, peak GPU memory (nvidia-smi, sampled every 0.5 s while each harvest runs). Nothing is asserted.
#
#   bench/gpu.sh                  # on a GPU machine, in an env with torch (CUDA), vllm and this project
#   DRY_RUN=1 PYTHON=.venv-vllm/bin/python bench/gpu.sh   # CPU: tiny sizes, checks the script's logic only
#
# Environment: PYTHON (default .venv/bin/python, else python3), MULTIWOZ (default: ../shared/multiwoz or
# ./shared/multiwoz), MODEL (a model folder; default: a random ~200M bfloat16 Llama on the tiny tokenizer, built by
# bench/gpu_model.py, since no hub is reachable), TASKS BEAM MAX_TURNS MAX_NEW_TOKENS CONCURRENCY, PHASE_S (time
# limit per harvest), WORK (scratch folder). vLLM reserves gpu_memory_utilization (0.92) of the GPU at start, so
# its peak is a reservation, not what it needs; the transformers figure is what its process really used.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

DRY_RUN=${DRY_RUN:-}
if [[ -n "$DRY_RUN" ]]; then
  TASKS=${TASKS:-2} BEAM=${BEAM:-2} MAX_TURNS=${MAX_TURNS:-1} MAX_NEW_TOKENS=${MAX_NEW_TOKENS:-16}
  CONCURRENCY=${CONCURRENCY:-2} PHASE_S=${PHASE_S:-400}
  export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2} VLLM_CPU_KVCACHE_SPACE=${VLLM_CPU_KVCACHE_SPACE:-1}
else
  TASKS=${TASKS:-32} BEAM=${BEAM:-8} MAX_TURNS=${MAX_TURNS:-4} MAX_NEW_TOKENS=${MAX_NEW_TOKENS:-128}
  CONCURRENCY=${CONCURRENCY:-32} PHASE_S=${PHASE_S:-190}
fi
if [[ -z "${PYTHON:-}" ]]; then
  if [[ -x .venv/bin/python ]]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
MULTIWOZ=${MULTIWOZ:-${FACTORY_MULTIWOZ:-}}
for candidate in ../shared/multiwoz ./shared/multiwoz; do
  if [[ -z "$MULTIWOZ" && -f "$candidate/data.json" ]]; then MULTIWOZ=$(cd "$candidate" && pwd); fi
done
WORK=${WORK:-$(mktemp -d)}
mkdir -p "$WORK"
export FACTORY_HOME="$WORK/home" PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}" HF_HUB_OFFLINE=1
factory() { "$PYTHON" -m factory.cli "$@"; }
say() { printf '[gpu.sh %s] %s\n' "$(date +%T)" "$*" >&2; }

# -- preflight: a Python that has vLLM (and CUDA unless DRY_RUN), MultiWOZ ---------------------------------------
"$PYTHON" - "$DRY_RUN" <<'EOF'
import importlib.util, sys
import torch
missing = [m for m in ("vllm", "transformers", "duckdb") if importlib.util.find_spec(m) is None]
if missing:
    sys.exit(f"bench/gpu.sh: {sys.executable} lacks {', '.join(missing)}; set PYTHON to an env with them")
if not sys.argv[1] and not torch.cuda.is_available():
    sys.exit("bench/gpu.sh: no CUDA device visible to torch; on CPU run DRY_RUN=1 bench/gpu.sh (logic check only)")
print(f"torch {torch.__version__}, cuda {torch.cuda.is_available()}"
      + (f" ({torch.cuda.get_device_name(0)})" if torch.cuda.is_available() else ""), file=sys.stderr)
EOF
[[ -n "$MULTIWOZ" ]] || { echo "bench/gpu.sh: no MultiWOZ; set MULTIWOZ=PATH (a folder with data.json)" >&2; exit 2; }

say "work folder $WORK; MultiWOZ $MULTIWOZ"
factory toolwoz build --multiwoz "$MULTIWOZ" -w "$WORK/template.duckdb" >/dev/null
if [[ -z "${MODEL:-}" ]]; then
  factory model init --multiwoz "$MULTIWOZ" >/dev/null
  TINY="$FACTORY_HOME/models/tiny-toolwoz"
  if [[ -n "$DRY_RUN" ]]; then
    MODEL="$TINY"
  else
    MODEL="$WORK/bench-model"
    "$PYTHON" bench/gpu_model.py "$TINY" "$MODEL" --hidden 1024 --layers 16 >&2
  fi
fi
say "model $MODEL; $TASKS val_harvest tasks, beam $BEAM, $MAX_TURNS turns, $MAX_NEW_TOKENS new tokens, concurrency $CONCURRENCY"

# -- one harvest per backend, GPU memory sampled meanwhile -----------------------------------------------------------
sample_gpu() {  # peak memory.used (MiB) of GPU 0 into $1 until killed
  if command -v nvidia-smi >/dev/null; then
    nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -i 0 -lms 500 >"$1" 2>/dev/null
  fi
}
harvest() {  # $1 = label, $2 = --agent value
  local label=$1 agent=$2
  cp "$WORK/template.duckdb" "$WORK/$label.duckdb"
  sample_gpu "$WORK/$label.mem" &
  local sampler=$!
  local start=$SECONDS rc=0
  timeout --kill-after=10 "$PHASE_S" "$PYTHON" -m factory.cli harvest --agent "$agent" --split val_harvest \
    --limit "$TASKS" --beam "$BEAM" --max-turns "$MAX_TURNS" --max-new-tokens "$MAX_NEW_TOKENS" \
    --concurrency "$CONCURRENCY" --json -w "$WORK/$label.duckdb" >"$WORK/$label.json" 2>"$WORK/$label.log" || rc=$?
  kill "$sampler" 2>/dev/null || true
  wait "$sampler" 2>/dev/null || true
  echo "$rc $((SECONDS - start))" >"$WORK/$label.rc"
  if [[ $rc -ne 0 ]]; then say "$label: exit $rc after $((SECONDS - start)) s; last log lines:"; tail -5 "$WORK/$label.log" >&2; fi
}
BASELINE=$( (nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -i 0 2>/dev/null || echo 0) | head -1)
say "transformers backend"; harvest transformers "$MODEL"
say "vLLM backend"; harvest vllm "vllm:$MODEL"

# -- the table ------------------------------------------------------------------------------------------------------
"$PYTHON" - "$WORK" "$BASELINE" <<'EOF'
import json, sys
from pathlib import Path
work, baseline = Path(sys.argv[1]), float(sys.argv[2] or 0)
rows = {}
for label in ("transformers", "vllm"):
    rc, wall = (Path(work, f"{label}.rc").read_text().split() + ["?", "?"])[:2]
    try:
        s = json.loads(Path(work, f"{label}.json").read_text())
    except (OSError, ValueError):
        s = {}
    mem = [float(x) for x in Path(work, f"{label}.mem").read_text().split()] if Path(work, f"{label}.mem").exists() else []
    seconds = s.get("seconds") or 0
    rows[label] = {"exit": rc, "wall s (incl. load)": wall, "harvest s": seconds, "rollouts": s.get("rollouts"),
                   "conversations/min": s.get("conversations_per_min"),
                   "generated tokens/s": round(s["completion_tokens"] / seconds, 1) if seconds else None,
                   "peak GPU MiB": round(max(mem) - baseline) if mem else "n/a"}
keys = list(rows["transformers"])
print(f"{'':22}{'transformers':>16}{'vllm':>16}")
for k in keys:
    print(f"{k:22}{str(rows['transformers'][k]):>16}{str(rows['vllm'][k]):>16}")
t, v = rows["transformers"]["generated tokens/s"], rows["vllm"]["generated tokens/s"]
if t and v:
    print(f"vllm / transformers generated tokens/s: {v / t:.2f}x")
EOF
say "done; warehouses and logs in $WORK"
