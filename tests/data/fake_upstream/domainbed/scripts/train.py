"""Upstream's training flow, cut to what touches algorithms, hparams and datasets."""
import argparse
import json

import torch

from domainbed import algorithms, datasets, hparams_registry
from domainbed.lib import misc

if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--data_dir", type=str, default="")
    parser.add_argument("--dataset", type=str, default="Debug28")
    parser.add_argument("--algorithm", type=str, default="ERM")
    parser.add_argument("--hparams", type=str)
    parser.add_argument("--hparams_seed", type=int, default=0)
    parser.add_argument("--trial_seed", type=int, default=0)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--test_envs", type=int, nargs="+", default=[0])
    args = parser.parse_args()
    if args.hparams_seed == 0:
        hparams = hparams_registry.default_hparams(args.algorithm, args.dataset)
    else:
        hparams = hparams_registry.random_hparams(args.algorithm, args.dataset,
                                                  misc.seed_hash(args.hparams_seed, args.trial_seed))
    if args.hparams:
        hparams.update(json.loads(args.hparams))
    if args.dataset in vars(datasets):
        dataset = vars(datasets)[args.dataset](args.data_dir, args.test_envs, hparams)
    else:
        raise NotImplementedError
    envs = [env for i, env in enumerate(dataset) if i not in args.test_envs]
    algorithm_class = algorithms.get_algorithm_class(args.algorithm)
    algorithm = algorithm_class(dataset.input_shape, dataset.num_classes,
                                len(dataset) - len(args.test_envs), hparams)
    g = torch.Generator().manual_seed(0)
    for step in range(args.steps):
        minibatches = []
        for env in envs:
            idx = torch.randint(len(env), (hparams["batch_size"],), generator=g)
            x, y = zip(*[env[int(i)] for i in idx])
            minibatches.append((torch.stack(x), torch.stack(list(map(torch.as_tensor, y)))))
        step_vals = algorithm.update(minibatches, None)
    algorithm.eval()
    with torch.no_grad():
        x, y = envs[0][0]
        logits = algorithm.predict(x[None])
    print(json.dumps({"algorithm": type(algorithm).__module__ + "." + type(algorithm).__name__,
                      "step_vals": step_vals, "hparams": hparams, "logits_shape": list(logits.shape),
                      "n_envs": datasets.num_environments(args.dataset)}))
