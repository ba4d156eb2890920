#!/bin/bash
# The fourteenth session's third GPU call: the 95% race, 3 seeds beside the 40-epoch reference, of
# fashion-mnist-95 graphed at batch 2048 (lr 0.6, Muon 0.2) for 40 epochs and for 44 (margin).
#   bash benchmarks/gpu_session3c.sh          (carry .gpu; about 250 s; run with timeout_s 290)
source "$(dirname "$0")/gpu_common.sh"
B="fashion-mnist-95;train.cuda_graph=true;data.batch_size=2048;optim.lr=0.6;optim.muon_lr=0.2"
phase race95_2048 275 python3 benchmarks/race.py --device cuda --target 95 --seeds 3 \
  --contender "g2048=$B" --contender "g2048e44=$B;train.epochs=44"
grep -v Warning "$LOG" | grep -v run_backward | tail -12
