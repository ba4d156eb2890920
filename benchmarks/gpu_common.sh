# Sourced by the GPU session scripts (benchmarks/gpu_session*.sh), run from the repository root on
# the device machine: the output folder, the environment, the machine's description, and
# `phase NAME LIMIT_S COMMAND...`, which runs a race.py-style command with its own time limit and
# its JSON in $OUT/NAME.json, so a phase that fails or runs long loses nothing of the others.
OUT=${OUT:-gpu-out}; mkdir -p "$OUT"
export PYTHONPATH=$PWD/src PYTHONUNBUFFERED=1 TRICKBAG_DATA=$PWD/.gpu/data
LOG=$OUT/log.txt
{ nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm,memory.total --format=csv; nproc;
  python3 -c "import torch, sys; print(sys.version); print(torch.__version__, torch.version.cuda, torch.cuda.get_device_name(0))"; } > "$OUT/env.txt" 2>&1
cat "$OUT/env.txt"
phase() { local name=$1 limit=$2; shift 2; local t0=$(date +%s.%N)
  timeout "$limit" "$@" --json-out "$OUT/$name.json" > /dev/null 2>> "$LOG"; local rc=$?
  echo "phase $name: rc $rc, $(python3 -c "print(round($(date +%s.%N) - $t0, 1))") s" | tee -a "$LOG"; return $rc; }
