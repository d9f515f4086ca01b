"""Index build time and memory at DomainNet's size: ours against upstream's ImageFolder loading.

    python benchmarks/index_speed.py [--workdir DIR] [--scale 1.0] [--repeats 2]

Fabricates `<workdir>/domain_net/<domain>/<class>/<name>.jpg` as empty files (the index never
opens an image): 345 classes, the published per-domain counts (586,575 files at --scale 1),
names like the real ones (`clipart_001_000001.jpg`), in /dev/shm unless --workdir says otherwise.
Then, each in a fresh process, builds the
six per-domain indexes two ways:
- ours: `DomainNet(root, [], hparams)` (two numpy arrays per domain: names, labels);
- upstream: one `torchvision.datasets.ImageFolder` per domain folder, as DomainBed's
  `MultipleEnvironmentImageFolder` does (a list of (path, label) tuples, plus `targets`).
Reports wall time (a plain run), and from a second run under tracemalloc the peak and the
retained Python heap of the build (numpy reports its buffers to tracemalloc), plus the peak
resident set of that process. Imports are done before the clock starts. The tree is removed at
the end unless --keep.
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COUNTS = {"clipart": 48129, "infograph": 51605, "painting": 72266, "quickdraw": 172500,
          "real": 172947, "sketch": 69128}  # Peng et al. 2019; sum 586,575

CHILD = r'''
import json, os, resource, sys, time, tracemalloc
how, root, traced = sys.argv[1], sys.argv[2], sys.argv[3] == "1"
import torch, torchvision, torchvision.transforms.v2  # noqa: F401,E401  (imports outside the clock)
if how == "ours":
    from domainbed_align.datasets.image_folder import DomainNet
    build = lambda: DomainNet(os.path.dirname(root), [], {"data_augmentation": False})
    count = lambda ds: sum(len(d) for d in ds.datasets)
else:
    from torchvision.datasets import ImageFolder
    envs = sorted(e.name for e in os.scandir(root) if e.is_dir())
    build = lambda: [ImageFolder(os.path.join(root, e)) for e in envs]
    count = lambda ds: sum(len(d) for d in ds)
if traced:
    tracemalloc.start()
t0 = time.perf_counter()
ds = build()
seconds = time.perf_counter() - t0
out = {"files": count(ds), "seconds": seconds,
       "maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
if traced:
    current, peak = tracemalloc.get_traced_memory()
    out.update(retained_mb=current / 2**20, peak_mb=peak / 2**20)
print(json.dumps(out))
'''


def fabricate(base: str, scale: float, n_classes: int = 345) -> int:
    from domainbed_align.datasets.image_folder import DomainNet
    classes = DomainNet.CLASSES[:n_classes]
    total = 0
    for d_i, (domain, n) in enumerate(COUNTS.items()):
        n = max(len(classes), int(n * scale))
        for c_i, cls in enumerate(classes):
            folder = os.path.join(base, domain, cls)
            os.makedirs(folder, exist_ok=True)
            k = n // len(classes) + (c_i < n % len(classes))
            for j in range(k):
                os.close(os.open(os.path.join(folder, f"{domain}_{c_i + 1:03d}_{j + 1:06d}.jpg"),
                                 os.O_CREAT | os.O_WRONLY, 0o644))
            total += k
    return total


def child(how: str, root: str, traced: bool) -> dict:
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run([sys.executable, "-c", CHILD, how, root, "1" if traced else "0"],
                          capture_output=True, text=True, env=env, check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workdir", help="where to fabricate the tree (default: a temp folder in "
                                     "/dev/shm where writable)")
    p.add_argument("--scale", type=float, default=1.0, help="fraction of DomainNet's counts")
    p.add_argument("--repeats", type=int, default=2, help="timed runs of each (warm cache)")
    p.add_argument("--keep", action="store_true", help="keep the fabricated tree")
    a = p.parse_args(argv)
    # tmpfs by default: creating 586k files on a busy ext4 disk took ~1 ms each here (10 min),
    # on /dev/shm 19 us; both indexes then list the same warm, in-memory tree
    shm = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None
    work = a.workdir or tempfile.mkdtemp(prefix="index_speed_", dir=shm)
    base = os.path.join(work, "domain_net")
    sys.path.insert(0, ROOT)
    try:
        t0 = time.perf_counter()
        n = fabricate(base, a.scale)
        print(f"fabricated {n:,} empty files in {time.perf_counter() - t0:.1f} s under {base}",
              flush=True)
        for how in ("ours", "upstream"):       # a first listing warms the dentry cache for both
            child(how, base, False)
        rows = {how: {"seconds": []} for how in ("ours", "upstream")}
        for _ in range(a.repeats):
            for how in ("ours", "upstream"):
                r = child(how, base, False)
                assert r["files"] == n, (how, r["files"], n)
                rows[how]["seconds"].append(r["seconds"])
        for how in ("ours", "upstream"):
            traced = child(how, base, True)
            rows[how].update({k: traced[k] for k in ("peak_mb", "retained_mb", "maxrss_mb")})
        print(f"\n{'index':<34}{'build s (runs)':>22}{'peak MB':>10}{'kept MB':>10}{'max RSS MB':>12}")
        names = {"ours": "ours: names + labels arrays",
                 "upstream": "upstream: ImageFolder per domain"}
        for how, r in rows.items():
            runs = ", ".join(f"{s:.2f}" for s in r["seconds"])
            print(f"{names[how]:<34}{runs:>22}{r['peak_mb']:>10.1f}{r['retained_mb']:>10.1f}"
                  f"{r['maxrss_mb']:>12.0f}")
        o, u = rows["ours"], rows["upstream"]
        print(f"\n{n:,} files, 6 domains, 345 classes; upstream/ours: build time "
              f"{min(u['seconds']) / min(o['seconds']):.1f}x, memory kept "
              f"{u['retained_mb'] / o['retained_mb']:.1f}x, peak {u['peak_mb'] / o['peak_mb']:.1f}x "
              f"(Python heap under tracemalloc; max RSS includes torch)")
    finally:
        if not a.keep:
            shutil.rmtree(work if not a.workdir else base, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
