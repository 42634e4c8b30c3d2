#!/usr/bin/env bash
# The same harvest (shipped M0, 20 val_harvest tasks, beam 8, 15 turns, 48 new tokens, T 1.0, 20 conversations in
# flight, seed 0) through vLLM's offline engine (.venv-vllm, prefix caching on, chunked prefill off on CPU) and
# through our transformers backend, one after the other; prints conversations/min and generated tokens/s of each.
# The trees differ where vLLM samples other tokens for the same seed. Run it alone: `make bench-vllm`.
set -euo pipefail
cd "$(dirname "$0")/.."
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
args=(harvest --agent "AGENT" --split val_harvest --limit 20 --beam 8 --max-turns 15 --max-new-tokens 48
      --temperature 1.0 --concurrency 20 --json)
echo "load average: $(cut -d' ' -f1-3 /proc/loadavg)"
for engine in vllm transformers; do
  if [ "$engine" = vllm ]; then bin=.venv-vllm/bin/factory; agent=vllm:factory/m0; else bin=.venv/bin/factory; agent=factory/m0; fi
  OMP_NUM_THREADS=${OMP_NUM_THREADS:-2} VLLM_CPU_KVCACHE_SPACE=${VLLM_CPU_KVCACHE_SPACE:-2} \
    "$bin" "${args[@]/AGENT/$agent}" -w "$out/$engine.duckdb" > "$out/$engine.json" 2> "$out/$engine.log" || {
      echo "$engine: exit $? (log: tail of $out/$engine.log)"; tail -5 "$out/$engine.log"; exit 1; }
  .venv/bin/python -c 'import json, sys; s = json.load(open(sys.argv[1])); print("{0:>12}: {rollouts} conversations, {failed} failed, {seconds:.1f} s, {conversations_per_min:.1f}/min, {tps:.0f} generated tokens/s, Average Reward {average_reward:.3f}".format(sys.argv[2], tps=s["completion_tokens"] / s["seconds"], **s))' "$out/$engine.json" "$engine"
done
