"""VLCS and TerraIncognita: DomainBed image folders, with optional relevance-mask folders.

Images live at `<data_dir>/<DIR>/<Domain>/<class>/<image>`; a mask folder mirrors that tree
(`<mask_dir>/<Domain>/<class>/<stem>.png`, 8-bit, 255 = relevant). Masks receive the same
geometric augmentation as their image and none of the colour ones (torchvision v2 transforms
apply colour jitter to images only).
"""
import os
from typing import List, Optional, Sequence

import torch
from torch.utils.data import Dataset

from domainbed_align.datasets.registry import register_dataset
from domainbed_align.datasets.base import MultipleDomainDataset
from domainbed_align.lib.errors import DataError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp")
MASK_COMMAND = "python -m domainbed_align.datasets.masks"
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def _transforms(size: int, augment: bool):
    from torchvision.transforms import v2
    tail = [v2.ToDtype(torch.float32, scale=True), v2.Normalize(IMAGENET_MEAN, IMAGENET_STD)]
    if not augment:
        return v2.Compose([v2.Resize((size, size), antialias=True)] + tail)
    return v2.Compose([
        v2.RandomResizedCrop(size, scale=(0.7, 1.0), antialias=True),
        v2.RandomHorizontalFlip(),
        v2.ColorJitter(0.3, 0.3, 0.3, 0.3),
        v2.RandomGrayscale(),
    ] + tail)


def list_images(domain_dir: str, classes: Sequence[str]):
    """Sorted (path, label) pairs of one domain folder."""
    items = []
    for label, cls in enumerate(classes):
        class_dir = os.path.join(domain_dir, cls)
        if not os.path.isdir(class_dir):
            continue
        for name in sorted(os.listdir(class_dir)):
            if name.lower().endswith(IMAGE_EXTENSIONS):
                items.append((os.path.join(class_dir, name), label))
    return items


class ImageFolderDomain(Dataset):
    """One domain's images (and masks), decoded lazily; `eval_view()` drops augmentation."""

    def __init__(self, items, size: int, augment: bool, mask_paths: Optional[List[str]] = None):
        self.items, self.size, self.augment, self.mask_paths = items, size, augment, mask_paths
        self.transform = _transforms(size, augment)

    def __len__(self):
        return len(self.items)

    def eval_view(self) -> "ImageFolderDomain":
        return ImageFolderDomain(self.items, self.size, False, self.mask_paths)

    def __getitem__(self, i):
        from PIL import Image
        from torchvision import tv_tensors
        from torchvision.transforms.v2 import functional as TF
        path, label = self.items[i]
        try:
            with Image.open(path) as im:
                image = tv_tensors.Image(TF.pil_to_tensor(im.convert("RGB")))
            if self.mask_paths is None:
                return self.transform(image), label
            with Image.open(self.mask_paths[i]) as im:
                mask = tv_tensors.Mask(TF.pil_to_tensor(im.convert("L")))
        except (OSError, ValueError) as e:
            bad = path if self.mask_paths is None or "mask" not in locals() else self.mask_paths[i]
            raise DataError(f"cannot read image {bad}: {e}; remove or replace the file") from e
        if mask.shape[-2:] != image.shape[-2:]:
            mask = TF.resize(mask, list(image.shape[-2:]))
        image, mask = self.transform(image, mask)
        return image, label, mask.float().div_(255.0)


class ImageFolderDataset(MultipleDomainDataset):
    """DomainBed's MultipleEnvironmentImageFolder, with domain checks and mask folders."""

    DIR = ""
    DOMAIN_DIRS: Sequence[str] = ()
    CHECKPOINT_FREQ = 300
    N_WORKERS = 8
    INPUT_SHAPE = (3, 224, 224)

    def __init__(self, root: str, test_envs, hparams, mask_dir: Optional[str] = None):
        super().__init__()
        if not root:
            raise DataError(f"{type(self).__name__} needs --data_dir, the folder that holds {self.DIR}/")
        base = os.path.join(root, self.DIR)
        if not os.path.isdir(base):
            raise DataError(f"data folder {base} does not exist; prepare {type(self).__name__} "
                            f"there (see README, 'Data') or point --data_dir at its parent")
        found = sorted(e.name for e in os.scandir(base) if e.is_dir() and not e.name.startswith("."))
        missing = [d for d in self.DOMAIN_DIRS if d not in found]
        stray = [d for d in found if d not in self.DOMAIN_DIRS]
        if missing or stray:
            raise DataError(f"{base} must hold exactly the domain folders "
                            f"{', '.join(self.DOMAIN_DIRS)}; "
                            + "; ".join(filter(None, [f"missing: {', '.join(missing)}" if missing else "",
                                                      f"unexpected: {', '.join(stray)}" if stray else ""])))
        classes = sorted({c for d in self.DOMAIN_DIRS for c in os.listdir(os.path.join(base, d))
                          if os.path.isdir(os.path.join(base, d, c))})
        self.HAS_MASKS = mask_dir is not None
        size = self.INPUT_SHAPE[1]
        for d in self.DOMAIN_DIRS:
            items = list_images(os.path.join(base, d), classes)
            if not items:
                raise DataError(f"domain folder {os.path.join(base, d)} holds no images")
            masks = self._mask_paths(base, mask_dir, items) if mask_dir else None
            self.datasets.append(ImageFolderDomain(items, size, hparams["data_augmentation"], masks))
        self.classes = classes
        self.num_classes = len(classes)
        self.input_shape = self.INPUT_SHAPE

    @staticmethod
    def _mask_paths(base: str, mask_dir: str, items) -> List[str]:
        paths, missing = [], []
        for path, _ in items:
            rel = os.path.splitext(os.path.relpath(path, base))[0] + ".png"
            mask = os.path.join(mask_dir, rel)
            paths.append(mask)
            if not os.path.exists(mask):
                missing.append(mask)
        if missing:
            raise DataError(f"{len(missing)} masks missing under {mask_dir} (first: {missing[0]}); "
                            f"every image needs a mask at <mask_dir>/<Domain>/<class>/<stem>.png; make "
                            f"the missing ones with `{MASK_COMMAND}` (it skips masks already written)")
        return paths


@register_dataset
class VLCS(ImageFolderDataset):
    """VLCS (Fang et al. 2013): Caltech101, LabelMe, SUN09, VOC2007; 5 classes."""

    DIR = "VLCS"
    DOMAIN_DIRS = ("Caltech101", "LabelMe", "SUN09", "VOC2007")


@register_dataset
class TerraIncognita(ImageFolderDataset):
    """TerraIncognita (Beery et al. 2018): four camera-trap locations; 10 classes."""

    DIR = "terra_incognita"
    DOMAIN_DIRS = ("location_100", "location_38", "location_43", "location_46")
