#!/bin/bash
# Prepared in the sixteenth session for the next GPU call (issue #10); not yet run.
#   bash benchmarks/gpu_session17.sh          (carry .gpu; about 450 s; run with timeout_s 580)
# Phases, each within a shared deadline:
#   0. the GPU-only tests
#   1. why the default's graphed run reached 94% after 2.82 s (fourteenth session) and 3.57 s
#      (sixteenth): the graphed contender alone and first in its process, then the fourteenth
#      session's order (reference, eager, graphed) in one process
#   2. a screen for the CPU's fashion-mnist-best (95.54% at width 32, 40 epochs; aim 95.6% within an
#      hour of 2-core CPU training): width 40 for 30 epochs and width 48 for 20, at the CPU recipe's
#      batch and lrs, 3 seeds each, six processes at once (accuracy only: they share the GPU). On the
#      slower CPU kind a 60,000-image epoch takes 70 s at width 32, 111 s at 40, 158 s at 48
#      (benchmarks/session16/step_time_best_widths.json): 55 and 53 minutes.
#   3. start-up, --repeats 1 (the sixteenth session's --repeats 2 ran past 70 s), now that Muon no longer
#      imports torch._dynamo; and whether the graphed GPU path imports it
# Files back: env, log, race94_graph_first, race94_session14_order, startup, cpu_best (merged).
source "$(dirname "$0")/gpu_common.sh"
TMP=/tmp/g17; mkdir -p "$TMP"
timeout "$(left 50)" python3 -m pytest -q -p no:cacheprovider tests/train/test_graphs.py -rs >> "$LOG" 2>&1
echo "phase pytest_gpu: rc $?" | tee -a "$LOG"
phase race94_graph_first "$(left 40)" python3 benchmarks/race.py --device cuda --no-reference --seeds 3 --contender "graph=fashion-mnist"
phase race94_session14_order "$(left 110)" python3 benchmarks/race.py --device cuda --seeds 3 \
  --contender "eager=fashion-mnist;train.cuda_graph=false" --contender "graph=fashion-mnist"
CPU="fashion-mnist-best;data.batch_size=256;optim.lr=0.2;optim.muon_lr=0.08;schedule.params.warmup_steps=0.02dur;train.cuda_graph=true"
T=$(left 250)
for spec in "w40e30=$CPU;model.params.width=40;train.epochs=30" "w48e20=$CPU;model.params.width=48;train.epochs=20"; do
  for s in 0 1 2; do race_seed "$T" "$spec" $s "$TMP" & done
done
wait
echo "phase cpu_best_screen: done" | tee -a "$LOG"
python3 benchmarks/merge_races.py "$TMP" "$OUT/cpu_best.json" --runs "race-w4*"
timeout "$(left 60)" python3 benchmarks/startup.py --device cuda --repeats 1 > "$OUT/startup.json" 2>> "$LOG"
echo "phase startup: rc $?" | tee -a "$LOG"
# does the graphed GPU path import torch's compiler? (on a CPU the default run does not, since Muon skips the wrapper)
timeout "$(left 40)" python3 -c "
import sys, tempfile
from trickbag.recipes import load
from trickbag.train import Trainer
with tempfile.TemporaryDirectory() as out:
    Trainer(load('fashion-mnist', ['train.epochs=1', 'train.device=cuda']), out=out, quiet=True, tensorboard=False).fit()
print('compiler imported on the GPU path:', 'torch._dynamo' in sys.modules)" 2>> "$LOG" | tee -a "$LOG"
grep -v Warning "$LOG" | grep -v run_backward | tail -25
