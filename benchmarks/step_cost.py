"""Cost of one update() of every registered algorithm against ERM, side by side in one process.

For each network (the built-in benchmark's small CNN at 28 px; ResNet-50 at 224 px with
--resnet) it prints, per algorithm, the measured time per update, the FLOPs per update
(torch.utils.flop_counter: forward and every backward pass, double-backward of differentiable
saliencies included), both relative to ERM, and their ratio. Target: no algorithm's time ratio
above 1.2x its FLOP ratio, i.e. no overhead beyond the compute the method needs. Mask-based
algorithms get a fixed rectangular mask per image.

    python benchmarks/step_cost.py [--device cuda] [--repeats 10] [--resnet] [--algorithms ERM SGT]
        [--precision bf16]

`--precision bf16` builds every algorithm with that hparam (channels-last ResNet) and times each
update under the trainer's bfloat16 autocast (lib/precision.py), as a bf16 run trains.
"""
import argparse
import time

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import flop_registry

from domainbed_align import hparams_registry
from domainbed_align.algorithms import ALGORITHMS, get_algorithm_class
from domainbed_align.lib import precision


def build(name, dataset, input_shape, num_classes, device, overrides):
    hp = hparams_registry.default_hparams(name, dataset)
    hp.update(overrides)
    for key in hp:
        if key.endswith("_warmup_steps"):
            hp[key] = 0  # measure the method's own steps, not a warm-up that is plain training
    torch.manual_seed(0)
    return get_algorithm_class(name)(input_shape, num_classes, 3, hp).to(device).train()


def batches(input_shape, num_classes, batch, device, n_domains=3):
    """(x, y, m) per domain; m: an off-centre rectangle covering about a quarter of the image."""
    g = torch.Generator().manual_seed(0)
    H, W = input_shape[1:]
    m = torch.zeros(batch, 1, H, W)
    m[:, :, H // 4:3 * H // 4, W // 3:5 * W // 6] = 1
    return [(torch.randn(batch, *input_shape, generator=g).to(device),
             torch.randint(0, num_classes, (batch,), generator=g).to(device), m.to(device))
            for _ in range(n_domains)]


def sync(device):
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def update(alg, mbs, device):
    """One update as the trainer runs it: under autocast when the hparams ask for bf16."""
    with precision.autocast(precision.of(alg.hparams), device):
        return alg.update(mbs)


def time_update(alg, mbs, device, repeats, warmup=3):
    for _ in range(warmup):
        update(alg, mbs, device)
    sync(device)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        update(alg, mbs, device)
        sync(device)
        times.append(time.perf_counter() - t0)
    times.sort()
    return times[len(times) // 2]  # median


class FlopCount(TorchDispatchMode):
    """Total FLOPs of the aten ops run inside (torch's flop formulas). Unlike FlopCounterMode it
    tracks no modules, whose backward hooks break autograd.grad with respect to the input."""

    def __init__(self):
        super().__init__()
        self.total = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        formula = flop_registry.get(func._overloadpacket)
        if formula is not None:
            self.total += formula(*args, **kwargs, out_val=out)
        return out


def flops_update(alg, mbs, device):
    with FlopCount() as counter:
        update(alg, mbs, device)
    return counter.total


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds; the fastest counts")
    p.add_argument("--small_batch", type=int, default=64, help="per domain, 28 px")
    p.add_argument("--resnet_batch", type=int, default=4, help="per domain, 224 px")
    p.add_argument("--resnet", action="store_true", help="also ResNet-50 at 224 px")
    p.add_argument("--resnet_size", type=int, default=224, help=argparse.SUPPRESS)  # CPU smoke runs
    p.add_argument("--skip_resnet", action="store_true", help=argparse.SUPPRESS)  # old flag: default now
    p.add_argument("--algorithms", nargs="+", default=ALGORITHMS)
    p.add_argument("--precision", default="fp32", choices=precision.PRECISIONS,
                   help="the hparam: bf16 = autocast + channels-last ResNet + cudnn.benchmark")
    args = p.parse_args(argv)
    precision.configure_backends(args.precision, args.device)
    names = ["ERM"] + [n for n in args.algorithms if n != "ERM"]
    prec = {"precision": args.precision}
    settings = [("small CNN 28px", "SpuriousDigits", (3, 28, 28), 10, args.small_batch, prec)]
    if args.resnet and not args.skip_resnet:
        size = args.resnet_size
        settings.append((f"ResNet-50 {size}px", "VLCS", (3, size, size), 5, args.resnet_batch,
                         {"pretrained": False, **prec}))
    cuda = args.device.startswith("cuda")
    print(f"device: {args.device} ({torch.cuda.get_device_name() if cuda else torch.get_num_threads()}"
          f"{'' if cuda else ' threads'}), torch {torch.__version__}, precision {args.precision}")
    ok = True
    for label, dataset, shape, k, batch, overrides in settings:
        print(f"\n{label}, batch {batch * 3} (3 domains x {batch})")
        print(f"{'algorithm':<10}{'ms':>9}{'time x':>8}{'GFLOP':>9}{'FLOP x':>8}{'time/FLOP':>11}")
        mbs = batches(shape, k, batch, args.device)
        algs = {n: build(n, dataset, shape, k, args.device, overrides) for n in names}
        inputs = {n: mbs if a.NEEDS_MASKS else [b[:2] for b in mbs] for n, a in algs.items()}
        flops = {n: flops_update(a, inputs[n], args.device) for n, a in algs.items()}
        best = {n: float("inf") for n in names}
        for _ in range(args.rounds):  # interleaved so that drift of the machine hits all alike
            for n, a in algs.items():
                best[n] = min(best[n], time_update(a, inputs[n], args.device, args.repeats))
        for n in names:
            time_ratio, flop_ratio = best[n] / best["ERM"], flops[n] / flops["ERM"]
            ok &= time_ratio <= 1.2 * flop_ratio
            print(f"{n:<10}{best[n] * 1e3:>9.1f}{time_ratio:>8.2f}{flops[n] / 1e9:>9.2f}{flop_ratio:>8.2f}"
                  f"{time_ratio / flop_ratio:>11.2f}")
    print("\ntarget time ratio <= 1.2 x FLOP ratio for every algorithm:", "met" if ok else "NOT met")


if __name__ == "__main__":
    main()
