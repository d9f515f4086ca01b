"""One builder per dataset: its source archives -> DomainBed's `<Domain>/<class>/<image>` folders.

Each builder takes `{source name: archive path}`, writes into a temporary folder and returns
the counts it saw (written to the manifest); it raises a `DataError` that names the archive when
the content is not what the dataset's release holds. `BUILDERS` maps a dataset to its builder.
Apart from `prepare.py`, which fetches, checks and puts the result in place, so that each
dataset's rules (DomainNet's duplicate list, TerraIncognita's locations and classes) read alone.
"""
import json
import os
from typing import Dict, List, Optional, Set, Tuple

from domainbed_align.datasets.archives import iter_members
from domainbed_align.datasets.check import Layout, get_layout, is_image
from domainbed_align.lib.errors import DataError

TERRA_LOCATIONS = ("38", "43", "46", "100")


def copy_image_folders(archive: str, tmp: str, layout: Layout, only_domain: Optional[str] = None,
                       drop: Set[str] = frozenset()) -> Tuple[int, int, int]:
    """Copy the `<...>/<Domain>/<class>/<image>` members of one archive into
    `tmp/<Domain>/<class>/`; returns (copied, skipped files, dropped by `drop`).

    `only_domain`: the archive must hold that domain only (DomainNet's one zip per domain);
    `drop`: `<Domain>/<class>/<image>` paths left out (DomainNet's duplicate list).
    """
    domains = {only_domain} if only_domain else set(layout.domains)
    classes = set(layout.classes)
    copied = skipped = dropped = 0
    first, unexpected = "", []
    for m in iter_members(archive, f"building {layout.name}"):
        parts = [p for p in m.name.split("/") if p not in ("", ".")]
        name = parts[-1] if parts else ""
        if name.startswith(".") or not is_image(name) or "__MACOSX" in parts:
            skipped += 1
            continue
        first = first or m.name
        at = [i for i, p in enumerate(parts[:-1]) if p in domains]
        if not at:
            skipped += 1
            if not copied and skipped >= 200:
                break  # 200 images and none in a domain folder of this dataset: another dataset
            continue
        domain, rest = parts[at[-1]], parts[at[-1] + 1:]
        if len(rest) != 2 or rest[0] not in classes or ".." in rest:
            unexpected.append(m.name)
            continue
        if f"{domain}/{rest[0]}/{rest[1]}" in drop:
            dropped += 1
            continue
        m.copy_to([os.path.join(tmp, domain, rest[0], rest[1])])
        copied += 1
    what = f"{layout.name}'s {only_domain} archive" if only_domain else \
        f"DomainBed's {layout.name} archive"
    if not copied and not dropped:
        raise DataError(f"{archive} does not look like {what}: no image lies in <Domain>/<class>/ "
                        f"with domain{' ' + only_domain if only_domain else 's ' + ', '.join(layout.domains)} "
                        f"and {layout.name}'s classes (first image: {first or 'none'})")
    if unexpected:
        raise DataError(f"{archive} has {len(unexpected)} images outside {layout.name}'s "
                        f"<Domain>/<class>/ folders (first: {unexpected[0]}); is it another "
                        f"dataset or version?")
    return copied, skipped, dropped


def build_image_folders(archives: Dict[str, str], tmp: str, layout: Layout) -> dict:
    """VLCS, PACS, OfficeHome: one archive holding every domain folder (under any prefix)."""
    copied, skipped, _ = copy_image_folders(archives["archive"], tmp, layout)
    return {"images": copied, "skipped_files": skipped}


def read_duplicates(path: str) -> Set[str]:
    """Upstream's domain_net_duplicates.txt: one `<domain>/<class>/<image>` path a line."""
    try:
        with open(path, encoding="utf-8") as f:
            lines = [line.strip() for line in f]
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"cannot read the duplicate list {path} ({e}); download or copy "
                        f"domain_net_duplicates.txt again") from None
    paths = {line for line in lines if line}
    domains = set(get_layout("DomainNet").domains)
    bad = sorted(p for p in paths if p.split("/")[0] not in domains or p.count("/") != 2)
    if bad:
        raise DataError(f"{path} is not DomainNet's duplicate list: {len(bad)} line(s) are not "
                        f"<domain>/<class>/<image> (first: {bad[0]!r})")
    return paths


def build_domain_net(archives: Dict[str, str], tmp: str, layout: Layout) -> dict:
    """Six zips, one per domain; the files of upstream's duplicate list are left out."""
    drop = read_duplicates(archives["duplicates"])
    stats = {"images": 0, "skipped_files": 0, "duplicates_removed": 0,
             "duplicates_listed": len(drop)}
    for domain in layout.domains:
        copied, skipped, dropped = copy_image_folders(archives[domain], tmp, layout, domain, drop)
        stats["images"] += copied
        stats["skipped_files"] += skipped
        stats["duplicates_removed"] += dropped
    return stats


def read_camera_trap_annotations(path: str) -> Dict[str, Set[Tuple[str, str]]]:
    """file_name -> {(location, class)} under upstream's rule, in one pass over annotations.

    Upstream keeps images at locations 38, 43, 46, 100 and copies each into the folder of every
    one of its annotations whose category is among the 10 classes (an image annotated with two
    kept classes lands in both). Several JSON files (the ECCV'18 splits) are merged.
    """
    classes = set(get_layout("TerraIncognita").classes)
    categories: Dict[object, str] = {}
    kept: Dict[object, Tuple[str, str]] = {}
    pairs: List[Tuple[object, object]] = []
    n_json = 0
    for m in iter_members(path, "reading annotations"):
        if not m.name.lower().endswith(".json") or os.path.basename(m.name).startswith("."):
            continue
        try:
            doc = json.loads(m.read())
        except ValueError as e:
            raise DataError(f"{m.name} in {path} is not valid JSON ({e}); the archive is "
                            f"damaged: download or copy it again") from None
        if not (isinstance(doc, dict) and {"images", "annotations", "categories"} <= doc.keys()):
            continue
        n_json += 1
        try:
            categories.update((c["id"], c["name"]) for c in doc["categories"])
            kept.update((im["id"], (str(im["location"]), im["file_name"]))
                        for im in doc["images"] if str(im.get("location")) in TERRA_LOCATIONS)
            pairs.extend((a["image_id"], a["category_id"]) for a in doc["annotations"])
        except (KeyError, TypeError) as e:
            raise DataError(f"{m.name} in {path} is not in the camera-trap format (missing "
                            f"{e}); is it the Caltech Camera Traps annotation file?") from None
    if not n_json:
        raise DataError(f"{path} holds no camera-trap annotation JSON (with images, annotations "
                        f"and categories); is it caltech_camera_traps.json.zip?")
    targets: Dict[str, Set[Tuple[str, str]]] = {}
    for image_id, category_id in pairs:
        image, cls = kept.get(image_id), categories.get(category_id)
        if image is not None and cls in classes:
            targets.setdefault(image[1], set()).add((image[0], cls))
    if not targets:
        raise DataError(f"the annotations in {path} name no image of the 10 classes at locations "
                        f"{', '.join(TERRA_LOCATIONS)}; is it the Caltech Camera Traps release?")
    return targets


def build_terra_incognita(archives: Dict[str, str], tmp: str, layout: Layout) -> dict:
    """Stream the image archive once, copying each annotated image to location_<id>/<class>/."""
    targets = read_camera_trap_annotations(archives["annotations"])
    found: Set[str] = set()
    first = ""
    for m in iter_members(archives["images"], "building TerraIncognita"):
        parts = m.name.split("/")
        first = first or m.name
        key = next(("/".join(parts[i:]) for i in range(len(parts))
                    if "/".join(parts[i:]) in targets), None)
        if key is None or key in found:
            continue
        name = os.path.basename(key)
        m.copy_to([os.path.join(tmp, f"location_{loc}", cls, name)
                   for loc, cls in sorted(targets[key])])
        found.add(key)
    if not found:
        raise DataError(f"{archives['images']} holds none of the {len(targets):,} images the "
                        f"annotations name (first file: {first or 'none'}); is it "
                        f"eccv_18_all_images_sm.tar.gz?")
    missing = sorted(set(targets) - found)
    if missing:
        raise DataError(f"{archives['images']} lacks {len(missing):,} of the {len(targets):,} "
                        f"images the annotations name (first: {missing[0]}); is the archive "
                        f"complete?")
    return {"images": len(found), "copies": sum(len(targets[k]) for k in found),
            "multi_class_images": sum(len(targets[k]) > 1 for k in found)}


BUILDERS = {"VLCS": build_image_folders, "TerraIncognita": build_terra_incognita,
            "PACS": build_image_folders, "OfficeHome": build_image_folders,
            "DomainNet": build_domain_net}
