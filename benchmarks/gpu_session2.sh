#!/bin/bash
# The next GPU session's measurements (issue #10, what the fourth session's gpu_session.sh left open),
# run on the device machine from the repository root, within one call of at most 600 s:
#   bash benchmarks/gpu_session2.sh           (Fashion-MNIST's files in .gpu/data/fashion-mnist, carried)
# Phases, each with its own time limit and its JSON in $OUT (or ./gpu-out), so one that fails or runs
# long loses nothing of the others:
#   0. smoke: every GPU code path once; stop here if one fails                        (<= 60 s)
#   1. start-up taken apart and the main job's wall minus training (target <= 5 s)    (<= 90 s)
#   2. the nccl path: torchrun with one process trains the default recipe              (<= 60 s)
#   3. the 94% race with torch.compile's modes (reduce-overhead = CUDA graphs), 3 seeds (<= 170 s)
#   4. the 95% race's net search: 40-epoch-class candidates, one seed each              (<= 150 s)
# About 540 s in all: run it with `run` (timeout_s 600) and carry .gpu.
source "$(dirname "$0")/gpu_common.sh"
LIN="schedule.name=linear_decay;schedule.params={total_steps: 1dur, warmup_steps: 0.05dur}"
# 0. smoke
phase smoke 60 python3 benchmarks/race.py --device cuda --no-reference --seeds 1 --contender "muon=fashion-mnist;train.epochs=1" \
  || { tail -30 "$LOG"; exit 1; }
grep -q '"error"' "$OUT/smoke.json" && { grep '"error"' "$OUT/smoke.json"; tail -30 "$LOG"; exit 1; }
# 1. start-up: phases in a fresh process, and `python -m trickbag train` (1 epoch) wall vs training
timeout 90 python3 benchmarks/startup.py --device cuda --repeats 2 > "$OUT/startup.json" 2>> "$LOG"
echo "phase startup: rc $?" | tee -a "$LOG"
# 2. the nccl path, one process (the CLI under torchrun; unmeasured until now)
t0=$(date +%s.%N)
timeout 60 torchrun --nproc-per-node 1 -m trickbag train --recipe fashion-mnist --out runs/ddp1 --overwrite --quiet --json \
  > "$OUT/torchrun1.json" 2>> "$LOG"
echo "phase torchrun1: rc $?, $(python3 -c "print(round($(date +%s.%N) - $t0, 1))") s" | tee -a "$LOG"
# 3. the 94% race: the default's cuda section eager, compiled, and with CUDA graphs (compile time counts as training)
phase race94 170 python3 benchmarks/race.py --device cuda --seeds 3 \
  --contender "fashion-mnist" --contender "co=fashion-mnist;train.compile=true" \
  --contender "ro=fashion-mnist;train.compile=true;train.compile_mode=reduce-overhead"
# 4. the 95% race's net search, one seed each, no reference (its 40-epoch figure: 95.0% at 53.9 s on an H100)
phase net95 150 python3 benchmarks/race.py --device cuda --target 95 --seeds 1 --no-reference \
  --contender "lin30=fashion-mnist-95;$LIN;train.epochs=30" \
  --contender "lin24=fashion-mnist-95;$LIN;train.epochs=24" \
  --contender "late30=fashion-mnist-95;$LIN;train.epochs=30;model.params.channels=[16,32,32,64,96,160,256]" \
  --contender "w24e20=fashion-mnist-95;$LIN;train.epochs=20;model.params.width=24" \
  --contender "ro_lin24=fashion-mnist-95;$LIN;train.epochs=24;train.compile=true;train.compile_mode=reduce-overhead"
tail -40 "$LOG"
