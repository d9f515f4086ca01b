"""DomainBed's image-folder datasets (VLCS, PACS, OfficeHome, TerraIncognita, DomainNet) and
`DomainFolder`, any `<data_dir>/<domain>/<class>/<image>` tree; all with optional mask folders.

Images live at `<data_dir>/<DIR>/<Domain>/<class>/<image>`; a mask folder mirrors that tree
(`<mask_dir>/<Domain>/<class>/<stem>.png`, 8-bit, 255 = relevant). Masks receive the same
geometric augmentation as their image and none of the colour ones (torchvision v2 transforms
apply colour jitter to images only).

The index of a domain is two numpy arrays, file names (bytes) and labels, plus the class
folder names: DomainNet's 586k files index in seconds into ~25 MB, with no Python object per
file, so DataLoader workers share it without copy-on-write growth
(benchmarks/index_speed.py measures it against torchvision's ImageFolder).
"""
import json
import os
from typing import List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch.utils.data import Dataset

from domainbed_align.datasets.registry import register_dataset
from domainbed_align.datasets.base import MultipleDomainDataset
from domainbed_align.lib.errors import ConfigError, DataError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp")
MASK_COMMAND = "python -m domainbed_align.datasets.masks"
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
SPEC_FILE = "domains.json"  # DomainFolder: optional names of domains, columns and classes


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


def _image_names(class_dir: str) -> List[str]:
    """Sorted image file names of one class folder (hidden files skipped, as `check` does)."""
    with os.scandir(class_dir) as it:
        return sorted(e.name for e in it if not e.name.startswith(".")
                      and e.name.lower().endswith(IMAGE_EXTENSIONS) and e.is_file())


class DomainIndex:
    """One domain's images: `names` (N,) file names as bytes, `labels` (N,) int64, sorted by
    class then name; image i is `<root>/<classes[labels[i]]>/<names[i]>`."""

    def __init__(self, root: str, classes: Sequence[str], names: np.ndarray, labels: np.ndarray):
        self.root, self.classes, self.names, self.labels = root, tuple(classes), names, labels

    @classmethod
    def scan(cls, root: str, classes: Sequence[str]) -> "DomainIndex":
        names: List[bytes] = []
        labels = []
        for label, c in enumerate(classes):
            class_dir = os.path.join(root, c)
            if not os.path.isdir(class_dir):
                continue
            found = _image_names(class_dir)
            names += map(os.fsencode, found)
            labels.append(np.full(len(found), label, dtype=np.int64))
        return cls(root, classes, np.array(names, dtype=bytes) if names else np.zeros(0, "S1"),
                   np.concatenate(labels) if labels else np.zeros(0, np.int64))

    def __len__(self) -> int:
        return len(self.labels)

    def relpath(self, i: int) -> str:
        """`<class>/<name>` of image i, relative to the domain folder."""
        return os.path.join(self.classes[self.labels[i]], os.fsdecode(self.names[i]))

    def path(self, i: int) -> str:
        return os.path.join(self.root, self.relpath(i))

    def nbytes(self) -> int:
        return self.names.nbytes + self.labels.nbytes


class ImageFolderDomain(Dataset):
    """One domain's images (and masks), decoded lazily; `eval_view()` drops augmentation.

    Args:
        index: the domain's DomainIndex.
        size: output side in pixels.
        augment: DomainBed's training augmentation.
        mask_root: `<mask_dir>/<Domain>` (masks at `<class>/<stem>.png`), or None.
    """

    def __init__(self, index: DomainIndex, size: int, augment: bool, mask_root: Optional[str] = None):
        self.index, self.size, self.augment, self.mask_root = index, size, augment, mask_root
        self.transform = _transforms(size, augment)

    @property
    def labels(self) -> np.ndarray:
        return self.index.labels

    @property
    def items(self) -> List[Tuple[str, int]]:
        """(path, label) of every image (builds a list: small domains and tools only)."""
        return [(self.index.path(i), int(self.index.labels[i])) for i in range(len(self.index))]

    def mask_path(self, i: int) -> Optional[str]:
        if self.mask_root is None:
            return None
        return os.path.join(self.mask_root, os.path.splitext(self.index.relpath(i))[0] + ".png")

    def __len__(self):
        return len(self.index)

    def eval_view(self) -> "ImageFolderDomain":
        return ImageFolderDomain(self.index, self.size, False, self.mask_root)

    def __getitem__(self, i):
        from PIL import Image
        from torchvision import tv_tensors
        from torchvision.transforms.v2 import functional as TF
        path, label = self.index.path(i), int(self.index.labels[i])
        bad = path
        try:
            with Image.open(path) as im:
                image = tv_tensors.Image(TF.pil_to_tensor(im.convert("RGB")))
            if self.mask_root is None:
                return self.transform(image), label
            bad = self.mask_path(i)
            with Image.open(bad) as im:
                mask = tv_tensors.Mask(TF.pil_to_tensor(im.convert("L")))
        except (OSError, ValueError) as e:
            raise DataError(f"cannot read image {bad}: {e}; remove or replace the file") from e
        if mask.shape[-2:] != image.shape[-2:]:
            mask = TF.resize(mask, list(image.shape[-2:]))
        image, mask = self.transform(image, mask)
        return image, label, mask.float().div_(255.0)


def _subfolders(path: str) -> List[str]:
    with os.scandir(path) as it:
        return sorted(e.name for e in it if e.is_dir() and not e.name.startswith("."))


class ImageFolderDataset(MultipleDomainDataset):
    """DomainBed's MultipleEnvironmentImageFolder, with domain and class checks and mask folders.

    Labels follow the sorted class-folder names, as torchvision's ImageFolder numbers them, but
    from one class list for every domain (upstream numbers each domain's own folders, so a
    domain missing a class would shift its labels).
    """

    DIR = ""
    DOMAIN_DIRS: Sequence[str] = ()
    CLASSES: Optional[Sequence[str]] = None   # the class folders; None: those found
    CHECKPOINT_FREQ = 300
    N_WORKERS = 8
    INPUT_SHAPE = (3, 224, 224)

    @classmethod
    def layout(cls, root: str) -> Tuple[str, Sequence[str], Optional[Sequence[str]]]:
        """(folder that holds the domain folders, domain folders in index order, classes)."""
        return os.path.join(root, cls.DIR), tuple(cls.DOMAIN_DIRS), cls.CLASSES

    def __init__(self, root: str, test_envs, hparams, mask_dir: Optional[str] = None):
        super().__init__()
        name = type(self).__name__
        if not root:
            raise DataError(f"{name} needs --data_dir, the folder that holds {self.DIR or 'its domain folders'}/")
        base, domain_dirs, declared = self.layout(root)
        if not os.path.isdir(base):
            raise DataError(f"data folder {base} does not exist; prepare {name} there "
                            f"(see README, 'Datasets') or point --data_dir at its parent")
        found = _subfolders(base)
        missing = [d for d in domain_dirs if d not in found]
        stray = [d for d in found if d not in domain_dirs]
        if missing or stray:
            raise DataError(f"{base} must hold exactly the domain folders "
                            f"{', '.join(domain_dirs)}; "
                            + "; ".join(filter(None, [f"missing: {', '.join(missing)}" if missing else "",
                                                      f"unexpected: {', '.join(stray)}" if stray else ""])))
        per_domain = {d: _subfolders(os.path.join(base, d)) for d in domain_dirs}
        if declared is None:
            classes = sorted({c for cs in per_domain.values() for c in cs})
        else:
            classes, known = sorted(declared), set(declared)
            for d, cs in per_domain.items():
                extra = [c for c in cs if c not in known]
                if extra:
                    raise DataError(f"{os.path.join(base, d)} holds class folder(s) {name} does not "
                                    f"have: {', '.join(extra[:5])}; move them away (`python -m "
                                    f"domainbed_align.datasets.check --dataset {name}` lists all)")
        self.HAS_MASKS = mask_dir is not None
        self.base, self.domain_dirs, self.classes = base, tuple(domain_dirs), classes
        size = self.INPUT_SHAPE[1]
        for d in domain_dirs:
            index = DomainIndex.scan(os.path.join(base, d), classes)
            if not len(index):
                raise DataError(f"domain folder {os.path.join(base, d)} holds no images")
            mask_root = os.path.join(mask_dir, d) if mask_dir else None
            if mask_root:
                self._check_masks(mask_dir, d, index)
            self.datasets.append(ImageFolderDomain(index, size, hparams["data_augmentation"], mask_root))
        self.num_classes = len(classes)
        self.input_shape = self.INPUT_SHAPE

    @staticmethod
    def _check_masks(mask_dir: str, domain: str, index: DomainIndex) -> None:
        """Every image needs `<mask_dir>/<domain>/<class>/<stem>.png` (one listing per class)."""
        have = {}
        missing, first = 0, None
        for i in range(len(index)):
            cls = index.classes[index.labels[i]]
            if cls not in have:
                folder = os.path.join(mask_dir, domain, cls)
                have[cls] = set(os.listdir(folder)) if os.path.isdir(folder) else set()
            stem = os.path.splitext(os.fsdecode(index.names[i]))[0] + ".png"
            if stem not in have[cls]:
                missing += 1
                first = first or os.path.join(mask_dir, domain, cls, stem)
        if missing:
            raise DataError(f"{missing} masks missing under {mask_dir} (first: {first}); "
                            f"every image needs a mask at <mask_dir>/<Domain>/<class>/<stem>.png; make "
                            f"the missing ones with `{MASK_COMMAND}` (it skips masks already written)")


@register_dataset
class VLCS(ImageFolderDataset):
    """VLCS (Fang et al. 2013): Caltech101, LabelMe, SUN09, VOC2007; 5 classes."""

    DIR = "VLCS"
    DOMAIN_DIRS = ("Caltech101", "LabelMe", "SUN09", "VOC2007")
    CLASSES = ("bird", "car", "chair", "dog", "person")


@register_dataset
class TerraIncognita(ImageFolderDataset):
    """TerraIncognita (Beery et al. 2018): four camera-trap locations; 10 classes."""

    DIR = "terra_incognita"
    DOMAIN_DIRS = ("location_100", "location_38", "location_43", "location_46")
    CLASSES = ("bird", "bobcat", "cat", "coyote", "dog", "empty", "opossum", "rabbit", "raccoon",
               "squirrel")


@register_dataset
class PACS(ImageFolderDataset):
    """PACS (Li et al. 2017): art painting, cartoon, photo, sketch; 7 classes."""

    DIR = "PACS"
    DOMAIN_DIRS = ("art_painting", "cartoon", "photo", "sketch")
    CLASSES = ("dog", "elephant", "giraffe", "guitar", "horse", "house", "person")


@register_dataset
class OfficeHome(ImageFolderDataset):
    """Office-Home (Venkateswara et al. 2017): Art, Clipart, Product, Real World; 65 classes."""

    DIR = "office_home"
    DOMAIN_DIRS = ("Art", "Clipart", "Product", "Real World")
    CLASSES = (
        "Alarm_Clock", "Backpack", "Batteries", "Bed", "Bike", "Bottle", "Bucket", "Calculator",
        "Calendar", "Candles", "Chair", "Clipboards", "Computer", "Couch", "Curtains", "Desk_Lamp",
        "Drill", "Eraser", "Exit_Sign", "Fan", "File_Cabinet", "Flipflops", "Flowers", "Folder",
        "Fork", "Glasses", "Hammer", "Helmet", "Kettle", "Keyboard", "Knives", "Lamp_Shade",
        "Laptop", "Marker", "Monitor", "Mop", "Mouse", "Mug", "Notebook", "Oven", "Pan",
        "Paper_Clip", "Pen", "Pencil", "Postit_Notes", "Printer", "Push_Pin", "Radio",
        "Refrigerator", "Ruler", "Scissors", "Screwdriver", "Shelf", "Sink", "Sneakers", "Soda",
        "Speaker", "Spoon", "TV", "Table", "Telephone", "ToothBrush", "Toys", "Trash_Can",
        "Webcam")


@register_dataset
class DomainNet(ImageFolderDataset):
    """DomainNet (Peng et al. 2019): six domains, 345 classes, ~0.6M images.

    As upstream: a record every 1,000 steps; the default 5,001 steps and the ResNet-50
    featurizer of every 224 px dataset; batch-size search 2**U(3, 5) (hparams_registry).
    """

    DIR = "domain_net"
    DOMAIN_DIRS = ("clipart", "infograph", "painting", "quickdraw", "real", "sketch")
    CHECKPOINT_FREQ = 1000
    CLASSES = tuple(sorted((
        "aircraft_carrier airplane alarm_clock ambulance angel animal_migration ant anvil apple "
        "arm asparagus axe backpack banana bandage barn baseball baseball_bat basket basketball "
        "bat bathtub beach bear beard bed bee belt bench bicycle binoculars bird birthday_cake "
        "blackberry blueberry book boomerang bottlecap bowtie bracelet brain bread bridge "
        "broccoli broom bucket bulldozer bus bush butterfly cactus cake calculator calendar camel "
        "camera camouflage campfire candle cannon canoe car carrot castle cat ceiling_fan cello "
        "cell_phone chair chandelier church circle clarinet clock cloud coffee_cup compass "
        "computer cookie cooler couch cow crab crayon crocodile crown cruise_ship cup diamond "
        "dishwasher diving_board dog dolphin donut door dragon dresser drill drums duck dumbbell "
        "ear elbow elephant envelope eraser eye eyeglasses face fan feather fence finger "
        "fire_hydrant fireplace firetruck fish flamingo flashlight flip_flops floor_lamp flower "
        "flying_saucer foot fork frog frying_pan garden garden_hose giraffe goatee golf_club "
        "grapes grass guitar hamburger hammer hand harp hat headphones hedgehog helicopter "
        "helmet hexagon hockey_puck hockey_stick horse hospital hot_air_balloon hot_dog hot_tub "
        "hourglass house house_plant hurricane ice_cream jacket jail kangaroo key keyboard knee "
        "knife ladder lantern laptop leaf leg light_bulb lighter lighthouse lightning line lion "
        "lipstick lobster lollipop mailbox map marker matches megaphone mermaid microphone "
        "microwave monkey moon mosquito motorbike mountain mouse moustache mouth mug mushroom "
        "nail necklace nose ocean octagon octopus onion oven owl paintbrush paint_can palm_tree "
        "panda pants paper_clip parachute parrot passport peanut pear peas pencil penguin piano "
        "pickup_truck picture_frame pig pillow pineapple pizza pliers police_car pond pool "
        "popsicle postcard potato power_outlet purse rabbit raccoon radio rain rainbow rake "
        "remote_control rhinoceros rifle river roller_coaster rollerskates sailboat sandwich saw "
        "saxophone school_bus scissors scorpion screwdriver sea_turtle see_saw shark sheep shoe "
        "shorts shovel sink skateboard skull skyscraper sleeping_bag smiley_face snail snake "
        "snorkel snowflake snowman soccer_ball sock speedboat spider spoon spreadsheet square "
        "squiggle squirrel stairs star steak stereo stethoscope stitches stop_sign stove "
        "strawberry streetlight string_bean submarine suitcase sun swan sweater swing_set sword "
        "syringe table teapot teddy-bear telephone television tennis_racquet tent "
        "The_Eiffel_Tower The_Great_Wall_of_China The_Mona_Lisa tiger toaster toe toilet tooth "
        "toothbrush toothpaste tornado tractor traffic_light train tree triangle trombone truck "
        "trumpet t-shirt umbrella underwear van vase violin washing_machine watermelon "
        "waterslide whale wheel windmill wine_bottle wine_glass wristwatch yoga zebra zigzag"
    ).split()))


def read_folder_spec(root: str) -> Tuple[Tuple[str, ...], Tuple[str, ...], Optional[Tuple[str, ...]]]:
    """(domain folders, column names, classes or None) of a DomainFolder tree.

    Without `<root>/domains.json` the domains are the sorted sub-folders, named as themselves.
    The file may set any of `"domains"` (folders, in index order), `"environments"` (table
    column names, one per domain) and `"classes"` (class folders; a label is its rank in sorted
    order, as ImageFolder numbers them), e.g. `{"domains": ["photo", "sketch"],
    "environments": ["P", "S"]}`.
    """
    if not root:
        raise ConfigError("DomainFolder needs --data_dir, the folder whose sub-folders are the "
                          "domains (<data_dir>/<domain>/<class>/<image>)")
    if not os.path.isdir(root):
        raise DataError(f"data folder {root} does not exist; DomainFolder reads "
                        f"<data_dir>/<domain>/<class>/<image>")
    spec_path = os.path.join(root, SPEC_FILE)
    spec = {}
    if os.path.exists(spec_path):
        try:
            with open(spec_path) as f:
                spec = json.load(f)
        except (OSError, ValueError) as e:
            raise DataError(f"{spec_path} is not valid JSON ({e}); fix it or remove it") from None
        keys = ("domains", "environments", "classes")
        bad = [k for k in spec if k not in keys] if isinstance(spec, dict) else ["(not an object)"]
        if bad or not all(isinstance(v, list) and v and all(isinstance(s, str) and s for s in v)
                          and len(set(v)) == len(v) for v in spec.values()):
            raise DataError(f"{spec_path} must be a JSON object with any of {', '.join(keys)}, "
                            f"each a list of distinct names (unexpected: {', '.join(bad) or 'none'})")
    domains = tuple(spec.get("domains") or _subfolders(root))
    if not domains:
        raise DataError(f"{root} holds no domain folders; DomainFolder reads "
                        f"<data_dir>/<domain>/<class>/<image>")
    envs = tuple(spec.get("environments") or domains)
    if len(envs) != len(domains):
        raise DataError(f"{spec_path}: {len(envs)} environments for {len(domains)} domains; give "
                        f"one name per domain")
    classes = tuple(spec["classes"]) if "classes" in spec else None
    return domains, envs, classes


@register_dataset
class DomainFolder(ImageFolderDataset):
    """Any `<data_dir>/<domain>/<class>/<image>` tree: domains and classes in sorted order,
    unless `<data_dir>/domains.json` names them (see `read_folder_spec`)."""

    @classmethod
    def layout(cls, root: str):
        domains, _, classes = read_folder_spec(root)
        return root, domains, classes

    @classmethod
    def environments(cls, data_dir: Optional[str] = None) -> Sequence[str]:
        return read_folder_spec(data_dir)[1]
