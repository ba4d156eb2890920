#!/bin/bash
# The fourteenth session's second GPU call (after gpu_session3.sh): the CUDA-graph tests again
# (their fp32 check made deterministic), where the start-up and a graphed step spend their time,
# and seeds 1-2 of fashion-mnist-95 graphed, plus batch 2048 toward 95% in 10 s.
#   bash benchmarks/gpu_session3b.sh          (carry .gpu; about 170 s; run with timeout_s 300)
source "$(dirname "$0")/gpu_common.sh"
G="train.cuda_graph=true"
timeout 60 python3 -m pytest -q -p no:cacheprovider tests/train/test_graphs.py -rs >> "$LOG" 2>&1
echo "phase pytest_gpu: rc $?" | tee -a "$LOG"
timeout 60 python3 benchmarks/gpu_profile.py --set "$G" > "$OUT/profile_graph.json" 2>> "$LOG"; echo "phase profile_graph: rc $?" | tee -a "$LOG"
timeout 50 python3 benchmarks/gpu_profile.py > "$OUT/profile_eager.json" 2>> "$LOG"; echo "phase profile_eager: rc $?" | tee -a "$LOG"
phase race95c 100 python3 benchmarks/race.py --device cuda --target 95 --seeds 2 --first-seed 1 --no-reference \
  --contender "g40=fashion-mnist-95;$G" \
  --contender "g2048=fashion-mnist-95;$G;data.batch_size=2048;optim.lr=0.6;optim.muon_lr=0.2"
grep -v Warning "$LOG" | tail -25
