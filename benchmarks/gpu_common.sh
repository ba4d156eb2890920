# Sourced by the GPU session scripts (benchmarks/gpu_session*.sh), run from the repository root on
# the device machine: the output folder, the environment, the machine's description, and
# `phase NAME LIMIT_S COMMAND...`, which runs a race.py-style command with its own time limit and
# its JSON in $OUT/NAME.json, so a phase that fails or runs long loses nothing of the others;
# `left N`, N or the seconds left before the call's deadline (BUDGET_S after sourcing) where fewer;
# and `race_seed LIMIT "LABEL=RECIPE;..." SEED DIR`, one seed of a 95% race contender without the
# reference, its JSON in DIR/LABEL_sSEED.json (append & to run several at once).
OUT=${OUT:-gpu-out}; mkdir -p "$OUT"
export PYTHONPATH=$PWD/src PYTHONUNBUFFERED=1 TRICKBAG_DATA=$PWD/.gpu/data
LOG=$OUT/log.txt
{ nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm,memory.total --format=csv; nproc;
  python3 -c "import torch, sys; print(sys.version); print(torch.__version__, torch.version.cuda, torch.cuda.get_device_name(0))"; } > "$OUT/env.txt" 2>&1
cat "$OUT/env.txt"
phase() { local name=$1 limit=$2; shift 2; local t0=$(date +%s.%N)
  timeout "$limit" "$@" --json-out "$OUT/$name.json" > /dev/null 2>> "$LOG"; local rc=$?
  echo "phase $name: rc $rc, $(python3 -c "print(round($(date +%s.%N) - $t0, 1))") s" | tee -a "$LOG"; return $rc; }
DEADLINE=$(( $(date +%s) + ${BUDGET_S:-560} ))
left() { local l=$(( DEADLINE - $(date +%s) )); (( l < $1 )) && echo "$l" || echo "$1"; }
race_seed() { local label=${2%%=*}
  timeout "$1" python3 benchmarks/race.py --device cuda --target 95 --no-reference --seeds 1 --first-seed "$3" \
    --contender "$2" --json-out "$4/${label}_s$3.json" > /dev/null 2>> "$LOG"; }
