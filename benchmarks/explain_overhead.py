"""What recording explanation metrics adds to a run: the same 300-step ERM run on SpuriousDigits
with `explain_n` 256 (the default) and 0 (off), interleaved, wall time of the whole command.

    python benchmarks/explain_overhead.py [--repeats 3] [--steps 300] [--checkpoint_freq N]

Target: at most +25% with the dataset's default checkpointing.
"""
import argparse
import statistics
import subprocess
import sys
import tempfile
import time


def run(steps, explain_n, checkpoint_freq, folder):
    cmd = [sys.executable, "-m", "domainbed_align.train", "--dataset", "SpuriousDigits", "--algorithm", "ERM",
           "--test_envs", "3", "--steps", str(steps), "--output_dir", folder,
           "--hparams", f'{{"explain_n": {explain_n}}}']
    if checkpoint_freq:
        cmd += ["--checkpoint_freq", str(checkpoint_freq)]
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True)
    return time.perf_counter() - t0


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--checkpoint_freq", type=int, default=None, help="default: the dataset's")
    args = p.parse_args(argv)
    off, on = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.repeats):
            off.append(run(args.steps, 0, args.checkpoint_freq, f"{tmp}/off{r}"))
            on.append(run(args.steps, 256, args.checkpoint_freq, f"{tmp}/on{r}"))
            print(f"repeat {r}: off {off[-1]:.1f} s, on {on[-1]:.1f} s", flush=True)
    m_off, m_on = statistics.median(off), statistics.median(on)
    print(f"median wall time: explain_n=0 {m_off:.1f} s, explain_n=256 {m_on:.1f} s, "
          f"overhead {100 * (m_on / m_off - 1):+.0f}% (checkpoint_freq {args.checkpoint_freq or 'default'})")


if __name__ == "__main__":
    main()
