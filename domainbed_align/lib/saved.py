"""Loading a finished run's saved model (`model.pkl`), for every command that reuses one.

It sits below `train`, `datasets.masks` and the explain CLI, which all read model files, so
none of them imports another to get it. torch is imported inside `load_run` only: `lib` stays
importable without torch.
"""
import os

from domainbed_align.lib.errors import ConfigError, DataError


def load_run(run_dir: str, model_name: str = "model.pkl", device: str = "cpu") -> dict:
    """The saved model dict of a run, or one actionable error."""
    if not os.path.isdir(run_dir):
        raise ConfigError(f"run folder {run_dir} does not exist; pass the --output_dir of a "
                          f"training run as --run_dir")
    path = os.path.join(run_dir, model_name)
    if not os.path.exists(path):
        have = sorted(f for f in os.listdir(run_dir) if f.endswith(".pkl"))
        hint = (f"models there: {', '.join(have)} (pick one with --model)" if have else
                "wait for the run to finish (it writes model.pkl at the end, unless "
                "--skip_model_save) or pass the right folder")
        raise DataError(f"no {model_name} in {run_dir}; {hint}")
    import torch
    try:
        # weights_only: a model file on a shared disk cannot run code when loaded
        saved = torch.load(path, map_location=device, weights_only=True)
    except Exception as e:  # truncated or foreign file
        raise DataError(f"cannot read {path} ({type(e).__name__}: {e}); re-run the training "
                        f"or pass another --model") from e
    missing = {"args", "model_dict", "model_hparams"} - set(saved if isinstance(saved, dict) else ())
    if missing:
        raise DataError(f"{path} is not a domainbed_align model file (missing: "
                        f"{', '.join(sorted(missing))})")
    return saved
