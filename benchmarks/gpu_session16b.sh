#!/bin/bash
# The sixteenth session's second GPU call: start-up (the first call's timed out at repeats 2), and a
# screen for the CPU's `fashion-mnist-best`: width 32, batch 256 (the CPU recipe), InfoBatch r 0.5
# for 80 epochs (about 51 epochs' steps, ~37 minutes on the 2-core CPU), 3 seeds at once.
#   bash benchmarks/gpu_session16b.sh         (carry .gpu; about 200 s; run with timeout_s 240)
BUDGET_S=${BUDGET_S:-220}
source "$(dirname "$0")/gpu_common.sh"
timeout "$(left 60)" python3 benchmarks/startup.py --device cuda --repeats 1 > "$OUT/startup.json" 2>> "$LOG"
echo "phase startup: rc $?" | tee -a "$LOG"
CPU80="fashion-mnist-best;data.batch_size=256;optim.lr=0.2;optim.muon_lr=0.08;schedule.params.warmup_steps=0.02dur;train.epochs=80;train.prune_easy=0.5;train.cuda_graph=true"
T=$(left 170)
for s in 0 1 2; do race_seed "$T" "w32p80=$CPU80" $s "$OUT" & done
wait
grep -v Warning "$LOG" | grep -v run_backward | tail -8
