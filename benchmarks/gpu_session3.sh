#!/bin/bash
# The fourteenth session's GPU measurements (issue #10, item 3), run on the device machine from the
# repository root within one call of at most 600 s:
#   bash benchmarks/gpu_session3.sh           (Fashion-MNIST's files in .gpu/data/fashion-mnist, carried)
# Phases, each with its own time limit and its JSON in $OUT (or ./gpu-out), so one that fails or runs
# long loses nothing of the others:
#   0. smoke: the CUDA tests (train.cuda_graph against the eager run) and one graphed epoch      (<= 75 s)
#   1. the 94% race: the default's cuda section eager and with train.cuda_graph, 3 seeds          (<= 120 s)
#   2. the 95% race, seed 0 beside the 40-epoch reference: fashion-mnist-95 graphed, and the
#      thirteenth session's lead (linear decay + ramped lookahead) at 26 and 32 epochs, graphed    (<= 130 s)
#   3. seeds 1 and 2 of the two shortest candidates, no reference                                 (<= 80 s)
#   4. start-up taken apart, and the main job's wall minus training (target <= 5 s)              (<= 60 s)
#   5. the nccl path: torchrun with one process trains the default recipe                        (<= 45 s)
# Eight files come back (the device tool's limit): env, log (the tests' output too), six JSON.
# About 510 s at most: run it with `run` (timeout_s 560) and carry .gpu.
source "$(dirname "$0")/gpu_common.sh"
LIN="schedule.name=linear_decay;schedule.params={total_steps: 1dur, warmup_steps: 0.05dur}"
LA="train.lookahead_steps=5;train.lookahead_alpha=0.226;train.lookahead_ramp=true"
G="train.cuda_graph=true"
# 0. smoke: the GPU-only tests, then one graphed epoch through race.py
timeout 60 python3 -m pytest -q -p no:cacheprovider tests/train/test_graphs.py -rs >> "$LOG" 2>&1
echo "phase pytest_gpu: rc $?" | tee -a "$LOG"
phase smoke 40 python3 benchmarks/race.py --device cuda --no-reference --seeds 1 --contender "g1=fashion-mnist;$G;train.epochs=1"
grep -o '"error"[^}]*' "$OUT/smoke.json" | head -3
# 1. the 94% race
phase race94 120 python3 benchmarks/race.py --device cuda --seeds 3 \
  --contender "fashion-mnist" --contender "graph=fashion-mnist;$G"
# 2. the 95% race, seed 0 with the reference
phase race95 130 python3 benchmarks/race.py --device cuda --target 95 --seeds 1 \
  --contender "g40=fashion-mnist-95;$G" \
  --contender "gla26=fashion-mnist-95;$G;train.epochs=26;$LIN;$LA" \
  --contender "gla32=fashion-mnist-95;$G;train.epochs=32;$LIN;$LA"
# 3. seeds 1 and 2, no reference
phase race95b 80 python3 benchmarks/race.py --device cuda --target 95 --seeds 2 --first-seed 1 --no-reference \
  --contender "gla26=fashion-mnist-95;$G;train.epochs=26;$LIN;$LA" \
  --contender "gla32=fashion-mnist-95;$G;train.epochs=32;$LIN;$LA"
# 4. start-up: phases in a fresh process, and `python -m trickbag train` (1 epoch) wall vs training
timeout 60 python3 benchmarks/startup.py --device cuda --repeats 1 > "$OUT/startup.json" 2>> "$LOG"
echo "phase startup: rc $?" | tee -a "$LOG"
# 5. the nccl path, one process (the CLI under torchrun)
t0=$(date +%s.%N)
timeout 45 torchrun --nproc-per-node 1 -m trickbag train --recipe fashion-mnist --out runs/ddp1 --overwrite --quiet --json \
  > "$OUT/torchrun1.json" 2>> "$LOG"
echo "phase torchrun1: rc $?, $(python3 -c "print(round($(date +%s.%N) - $t0, 1))") s" | tee -a "$LOG"
tail -30 "$LOG"
