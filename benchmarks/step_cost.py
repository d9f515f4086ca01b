"""Cost of one ALIGN update() against one ERM update(), side by side in one process.

For each network (the built-in benchmark's small CNN at 28 px; ResNet-50 at 224 px) it prints
the measured time per update, the FLOPs per update (torch.utils.flop_counter, forward and all
backward passes, double-backward of the differentiable Grad-CAM included) and both ratios.
Target: ALIGN's time ratio to ERM is at most 1.2x its FLOP ratio, i.e. ALIGN adds no overhead
beyond the compute the method needs.

    python benchmarks/step_cost.py [--device cuda] [--repeats 10] [--resnet_batch 8]
"""
import argparse
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from domainbed_align import hparams_registry
from domainbed_align.algorithms import get_algorithm_class


def build(name, dataset, input_shape, num_classes, device, overrides):
    hp = hparams_registry.default_hparams(name, dataset)
    hp.update(overrides)
    if "align_warmup_steps" in hp:
        hp["align_warmup_steps"] = 0  # measure the alternating rounds, not the warm-up
    torch.manual_seed(0)
    return get_algorithm_class(name)(input_shape, num_classes, 3, hp).to(device).train()


def batches(input_shape, num_classes, batch, device, n_domains=3):
    g = torch.Generator().manual_seed(0)
    return [(torch.randn(batch, *input_shape, generator=g).to(device),
             torch.randint(0, num_classes, (batch,), generator=g).to(device)) for _ in range(n_domains)]


def sync(device):
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def time_update(alg, mbs, device, repeats, warmup=3):
    for _ in range(warmup):
        alg.update(mbs)
    sync(device)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        alg.update(mbs)
        sync(device)
        times.append(time.perf_counter() - t0)
    times.sort()
    return times[len(times) // 2]  # median


def flops_update(alg, mbs):
    with FlopCounterMode(display=False) as counter:
        alg.update(mbs)
    return counter.get_total_flops()


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--small_batch", type=int, default=64, help="per domain, 28 px")
    p.add_argument("--resnet_batch", type=int, default=4, help="per domain, 224 px")
    p.add_argument("--skip_resnet", action="store_true")
    args = p.parse_args(argv)
    settings = [("small CNN 28px", "SpuriousDigits", (3, 28, 28), 10, args.small_batch, {})]
    if not args.skip_resnet:
        settings.append(("ResNet-50 224px", "VLCS", (3, 224, 224), 5, args.resnet_batch, {"pretrained": False}))
    print(f"device: {args.device} ({torch.cuda.get_device_name() if args.device.startswith('cuda') else torch.get_num_threads()} "
          f"{'' if args.device.startswith('cuda') else 'threads'}), torch {torch.__version__}")
    print(f"{'network':<18}{'batch':>7}{'ERM ms':>10}{'ALIGN ms':>10}{'time x':>8}{'ERM GF':>10}{'ALIGN GF':>10}"
          f"{'FLOP x':>8}{'time/FLOP':>11}")
    ok = True
    for label, dataset, shape, k, batch, overrides in settings:
        mbs = batches(shape, k, batch, args.device)
        erm = build("ERM", dataset, shape, k, args.device, overrides)
        align = build("ALIGN", dataset, shape, k, args.device, overrides)
        f_erm, f_align = flops_update(erm, mbs), flops_update(align, mbs)
        # interleave the two so that drift of the machine hits both alike
        t_erm, t_align = [], []
        for _ in range(3):
            t_erm.append(time_update(erm, mbs, args.device, args.repeats))
            t_align.append(time_update(align, mbs, args.device, args.repeats))
        te, ta = min(t_erm), min(t_align)
        time_ratio, flop_ratio = ta / te, f_align / f_erm
        ok &= time_ratio <= 1.2 * flop_ratio
        print(f"{label:<18}{batch * 3:>7}{te * 1e3:>10.1f}{ta * 1e3:>10.1f}{time_ratio:>8.2f}"
              f"{f_erm / 1e9:>10.2f}{f_align / 1e9:>10.2f}{flop_ratio:>8.2f}{time_ratio / flop_ratio:>11.2f}")
    print("target time ratio <= 1.2 x FLOP ratio:", "met" if ok else "NOT met")


if __name__ == "__main__":
    main()
