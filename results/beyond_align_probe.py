"""Issue 19's masker probe (a pilot, not a result): the classifier of an ALIGN run's checkpoint
(patch cue, agreement 0.95, domain 3 held out), frozen; for each masker objective a fresh
masker (seed 0) trained for STEPS masker steps on batches of 16 per training domain; then
where its mask puts its mass (mass share / area share, 1 = uniform) on 256 images of domain 3
and of each training domain, and the classifier's accuracy on the kept part x*M.

    python results/beyond_align_probe.py RUN/checkpoint.pt 200 ALIGN:0 ALIGN_VREx:10 ALIGN_IRM:10
"""
import sys
import time

import torch
from domainbed_align import hparams_registry, networks
from domainbed_align.algorithms import get_algorithm_class
from domainbed_align.datasets import get_dataset_class
from domainbed_align.explain.metrics import region_densities

torch.set_num_threads(1)
CHECKPOINT, STEPS = sys.argv[1], int(sys.argv[2])
specs = [s.split(":") for s in sys.argv[3:]]  # ALGORITHM:weight
over = {"digits_cue": "patch", "cue_agreement": 0.95, "batch_size": 16}
ck = torch.load(CHECKPOINT, map_location="cpu", weights_only=True)
ds = get_dataset_class("SpuriousDigits")("./data", [3], hparams_registry.run_hparams("ALIGN", "SpuriousDigits", 0, 0, over))
cue = torch.from_numpy(ds.cue_region)
envs = ds.datasets
print("classifier of", CHECKPOINT, "at step", ck["next_step"] - 1)
for name, lam in specs:
    hp = hparams_registry.run_hparams(name, "SpuriousDigits", 0, 0, over)
    if name != "ALIGN":
        hp[get_algorithm_class(name).WEIGHT] = float(lam)
    alg = get_algorithm_class(name)((3, 28, 28), 10, 3, hp)
    alg.load_state_dict(ck["algorithm"])
    torch.manual_seed(0)
    alg.masker = networks.Masker((3, 28, 28), hp["masker_width"])
    alg.masker_optimizer = alg._adam(alg.masker.parameters(), lr=hp["masker_lr"])
    alg.train()
    g = torch.Generator().manual_seed(0)
    log, t0 = [], time.time()
    for step in range(STEPS):
        xs, ys, ds_ = [], [], []
        for e in range(3):
            idx = torch.randint(len(envs[e]), (16,), generator=g)
            x, y, _ = envs[e].batch(idx)
            xs.append(x); ys.append(y); ds_.append(torch.full_like(y, e))
        log.append(alg.masker_step(torch.cat(xs), torch.cat(ys), torch.cat(ds_)))
    alg.eval()
    out = {}
    with torch.no_grad():
        for e in (3, 0, 1, 2):
            x, y, m = envs[e].eval_view().batch(torch.arange(256))
            d = region_densities(alg.masker(x), m, cue)
            kept = alg.network(x * alg.masker(x)).argmax(1)
            out[e] = (d["cue"], d["strokes"], d["background"], float((kept == y).float().mean()))
    pen = get_algorithm_class(name).PENALTY
    first = {k: sum(v[k] for v in log[:20]) / 20 for k in log[0]}
    last = {k: sum(v[k] for v in log[-20:]) / 20 for k in log[0]}
    fmt = lambda dct: " ".join(f"{k}={dct[k]:.4f}" for k in ("mask_dist", "mask_area", pen) if k)
    print(f"{name} lambda={lam}: domain3 density cue {out[3][0]:.2f} strokes {out[3][1]:.2f} bg {out[3][2]:.2f} "
          f"kept-part acc {out[3][3]:.3f} | train domains cue/strokes "
          + " ".join(f"d{e} {out[e][0]:.2f}/{out[e][1]:.2f} acc {out[e][3]:.2f}" for e in (0, 1, 2))
          + f" | first20 {fmt(first)} | last20 {fmt(last)} | {time.time() - t0:.0f}s", flush=True)
