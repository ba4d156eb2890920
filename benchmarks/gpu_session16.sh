#!/bin/bash
# The sixteenth session's GPU call (issue #10): `fashion-mnist-best` on a GPU, aiming at >= 95.6%
# mean of 3 seeds within 3 minutes of training, and start-up against a bare loop's floor.
#   bash benchmarks/gpu_session16.sh          (carry .gpu; about 420 s; run with timeout_s 580)
# Phases, each within a shared deadline, so one that runs long loses nothing of the others:
#   0. the GPU-only tests (train.cuda_graph against the eager run)
#   1. the default's cuda section, 3 seeds, no reference: the trainer changed since it was raced
#   2. start-up: trickbag's phases, a bare loop's floor, the main job's wall minus training
#   3. two width-64 candidates of fashion-mnist-best, seed 0 alone (its time is the recipe's)
#   4. seeds 1 and 2 of both, four processes at once on the one GPU (accuracy only: their clocks
#      share the GPU, so each is an upper bound of the time alone)
# At most eight files come back: env, log, race94, startup, best (every candidate's runs, merged).
source "$(dirname "$0")/gpu_common.sh"
G="train.cuda_graph=true"
W64B256="fashion-mnist-best;model.params.width=64;data.batch_size=256;optim.lr=0.2;optim.muon_lr=0.08;schedule.params.warmup_steps=0.02dur;train.epochs=40;$G"
W64B512="fashion-mnist-best;model.params.width=64;data.batch_size=512;optim.lr=0.28;optim.muon_lr=0.11;schedule.params.warmup_steps=0.05dur;train.epochs=60;$G"
TMP=/tmp/g16; mkdir -p "$TMP"
# 0. tests
timeout "$(left 50)" python3 -m pytest -q -p no:cacheprovider tests/train/test_graphs.py -rs >> "$LOG" 2>&1
echo "phase pytest_gpu: rc $?" | tee -a "$LOG"
# 1. the 94% recipe, no reference
phase race94 "$(left 40)" python3 benchmarks/race.py --device cuda --no-reference --seeds 3 --contender "graph=fashion-mnist"
# 2. start-up
timeout "$(left 70)" python3 benchmarks/startup.py --device cuda --repeats 2 > "$OUT/startup.json" 2>> "$LOG"
echo "phase startup: rc $?" | tee -a "$LOG"
# 3. seed 0 of each candidate, alone
for spec in "w64b256e40=$W64B256" "w64b512e60=$W64B512"; do
  race_seed "$(left 120)" "$spec" 0 "$TMP"
  echo "phase ${spec%%=*}_s0: rc $?" | tee -a "$LOG"
done
# 4. seeds 1 and 2, four processes at once
T=$(left 240)
for spec in "w64b256e40=$W64B256" "w64b512e60=$W64B512"; do
  for s in 1 2; do race_seed "$T" "$spec" $s "$TMP" & done
done
wait
echo "phase parallel: done" | tee -a "$LOG"
# every candidate's runs in one file, and every run's per-epoch metrics (a run cut short keeps its epochs)
python3 benchmarks/merge_races.py "$TMP" "$OUT/best.json" --runs "race-w64*"
grep -v Warning "$LOG" | grep -v run_backward | tail -25
