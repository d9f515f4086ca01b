"""`python -m domainbed_align.explain` end to end on a tiny run, its figure layout, bad input."""
import matplotlib.image
import pytest
import torch
from matplotlib import _pylab_helpers
from torch import nn

from conftest import run_module
from domainbed_align.explain import plots
from domainbed_align.explain.__main__ import main


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A finished 3-step Debug28 ERM run in a folder whose name has spaces and quotes."""
    out = tmp_path_factory.mktemp("explain") / "a b'; echo \"x" / "run"
    run_module("domainbed_align.train", "--dataset", "Debug28", "--algorithm", "ERM", "--test_envs", "0",
               "--steps", "3", "--checkpoint_freq", "2", "--output_dir", out,
               "--hparams", '{"explain_n": 0}')
    assert (out / "model.pkl").exists()
    return out


def test_cli_writes_png(run_dir, capsys):
    # In-process `main(argv)`: a second interpreter would double the test's time.
    png = run_dir.parent / "grad cam.png"
    assert main(["--run_dir", str(run_dir), "--env", "1", "--n", "4", "--out", str(png)]) == 0
    stdout = capsys.readouterr().out
    assert "wrote" in stdout and "gt_mask" in stdout and "learned_mask" not in stdout
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    img = matplotlib.image.imread(str(png))  # (H, W, 4) floats
    h, w = img.shape[:2]
    assert img.ndim == 3 and 200 <= w <= 2000 and 300 <= h <= 3000, img.shape
    assert img[..., :3].std() > 0.05  # something was drawn


class FakeAlgorithm(nn.Module):
    """The slice of the Algorithm contract the figure uses, with an optional learned mask."""

    def __init__(self, learns_mask: bool, num_classes: int = 3):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(),
                                      nn.Conv2d(4, 4, 3, stride=2, padding=1))
        self.head = nn.Linear(4, num_classes)
        self.network = nn.Sequential(self.features, nn.AdaptiveAvgPool2d(1), nn.Flatten(), self.head)
        self.learns_mask = learns_mask

    @property
    def cam_layer(self):
        return self.features[-1]

    def learned_mask(self, x):
        if not self.learns_mask:
            return None
        return torch.sigmoid(x.mean(dim=1, keepdim=True))[..., ::2, ::2]  # (B, 1, H/2, W/2): resized


@pytest.mark.parametrize("learns_mask", [False, True])
@pytest.mark.parametrize("with_masks", [False, True])
def test_panels_follow_what_exists(learns_mask, with_masks):
    torch.manual_seed(0)
    n = 5
    x, y = torch.randn(n, 3, 12, 12), torch.tensor([0, 1, 2, 0, 1])
    m = (torch.rand(n, 1, 12, 12) > 0.5).float() if with_masks else None
    algorithm = FakeAlgorithm(learns_mask).train()
    managers = _pylab_helpers.Gcf.get_num_fig_managers()
    fig = plots.explanation_figure(algorithm, x, y, m, class_names=["cat", "dog", "a very long class name"],
                                   title="Fake on Test, domain 0")
    assert algorithm.training  # restored after eval-mode explanation
    assert _pylab_helpers.Gcf.get_num_fig_managers() == managers  # pyplot never saw the figure
    panels = 2 + with_masks + learns_mask
    assert len(fig.axes) == n * panels
    titles = [ax.get_title() for ax in fig.axes]
    assert ("learned mask" in titles) == learns_mask and ("true mask" in titles) == with_masks
    preds = algorithm.network(x).argmax(dim=1)
    for i in range(n):
        ax = fig.axes[i * panels]
        right = bool(preds[i] == y[i])
        assert ax.get_title().endswith("✓" if right else "✗")
        assert ax.title.get_color() == (plots.CORRECT_COLOUR if right else plots.WRONG_COLOUR)
        assert not ax.get_xticks().size and not ax.get_yticks().size


def _error(capsys, argv):
    code = main([str(a) for a in argv])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("error: ") and len(err.splitlines()) == 1, err
    return err


def test_missing_run_folder(tmp_path, capsys):
    err = _error(capsys, ["--run_dir", tmp_path / "nope", "--env", "0", "--out", tmp_path / "f.png"])
    assert "does not exist" in err and "--run_dir" in err


def test_run_without_model(tmp_path, capsys):
    err = _error(capsys, ["--run_dir", tmp_path, "--env", "0", "--out", tmp_path / "f.png"])
    assert "no model.pkl" in err and "wait for the run to finish" in err


def test_env_out_of_range(run_dir, tmp_path, capsys):
    err = _error(capsys, ["--run_dir", run_dir, "--env", "3", "--out", tmp_path / "f.png"])
    assert "0..2" in err and "0=0, 1=1, 2=2" in err
    assert not (tmp_path / "f.png").exists()


def test_n_below_one(run_dir, tmp_path, capsys):
    err = _error(capsys, ["--run_dir", run_dir, "--env", "0", "--n", "0", "--out", tmp_path / "f.png"])
    assert "--n must be at least 1" in err
