#!/bin/bash
# One GPU session's measurements (issue #10), run on the device machine from the repository root:
#   bash benchmarks/gpu_session.sh            (Fashion-MNIST's files in .gpu/data/fashion-mnist, carried)
# Each phase has its own time limit and writes its JSON to $OUT (or ./gpu-out), so a phase that
# fails or runs long loses nothing of the others. The contenders' overrides are on top of the
# recipes' cuda sections (a key set here replaces the section's).
source "$(dirname "$0")/gpu_common.sh"
B1024="data.batch_size=1024;optim.lr=0.4;optim.muon_lr=0.16;schedule.params.warmup_steps=0.05dur"
B512="data.batch_size=512;optim.lr=0.3;optim.muon_lr=0.12;schedule.params.warmup_steps=0.03dur"
# 0. smoke: every GPU code path once (Muon + device skip, fused SGD, EMA), 1 epoch each; stop here if one fails
phase smoke 90 python3 benchmarks/race.py --device cuda --no-reference --seeds 1 \
  --contender "muon=fashion-mnist;train.epochs=1" --contender "sgd_ema=fashion-mnist;train.epochs=1;optim.name=nesterov;train.ema_decay=0.9" \
  || { tail -30 "$LOG"; exit 1; }
grep -q '"error"' "$OUT/smoke.json" && { grep '"error"' "$OUT/smoke.json"; tail -30 "$LOG"; exit 1; }
# 1. the main job as a user runs it: `trickbag train` (auto -> cuda, the recipe's cuda section); wall vs training time
t0=$(date +%s.%N)
timeout 60 python3 -m trickbag.cli train --out runs/cli-main --overwrite --quiet --json > "$OUT/cli.json" 2>> "$LOG"
echo "cli wall $(python3 -c "print(round($(date +%s.%N) - $t0, 2))") s" | tee -a "$LOG" "$OUT/cli_wall.txt"
# 2. the 94% race: reference (12 epochs) beside the default (its cuda section) and variants, 3 seeds
phase race94 200 python3 benchmarks/race.py --device cuda --seeds 3 \
  --contender "fashion-mnist" --contender "e7=fashion-mnist;train.epochs=7" --contender "e10=fashion-mnist;train.epochs=10" \
  --contender "b512e7=fashion-mnist;$B512;train.epochs=7" \
  --contender "b2048e10=fashion-mnist;data.batch_size=2048;optim.lr=0.6;optim.muon_lr=0.2;train.epochs=10" \
  --contender "cpu_recipe=fashion-mnist;cuda={}"
# 3. the 95% race: reference (40 epochs) beside the 95 recipe at batch 1024 and variants, 3 seeds
phase race95 240 python3 benchmarks/race.py --device cuda --target 95 --seeds 3 \
  --contender "n40=fashion-mnist-95;$B1024" --contender "n30=fashion-mnist-95;$B1024;train.epochs=30" \
  --contender "n40b512=fashion-mnist-95;$B512"
# 4. best: the wide net, one seed each, as long as time allows
phase best 90 python3 benchmarks/race.py --device cuda --target 95 --seeds 1 --no-reference \
  --contender "w32b1024e60=fashion-mnist-best;$B1024;train.epochs=60" --contender "w32b512e50=fashion-mnist-best;$B512;train.epochs=50"
tail -40 "$LOG"
