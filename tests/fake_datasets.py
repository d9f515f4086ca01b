"""Small fabricated copies of the real dataset archives, and a local HTTP server with ranges.

The archives have the real layouts (DomainBed's VLCS.tar.gz; the Caltech Camera Traps ECCV'18
images and annotation archives) with a handful of real JPEG files, so the prepare code paths
run offline in a second.
"""
import http.server
import io
import json
import re
import tarfile
import threading

VLCS_DOMAINS = ("Caltech101", "LabelMe", "SUN09", "VOC2007")
VLCS_CLASSES = ("bird", "car", "chair", "dog", "person")
TERRA_CLASSES = ("bird", "bobcat", "cat", "coyote", "dog", "empty", "opossum", "rabbit",
                 "raccoon", "squirrel")
TERRA_LOCATIONS = (38, 43, 46, 100)


def jpeg_bytes(seed: int, size=(8, 6)) -> bytes:
    from PIL import Image
    im = Image.new("RGB", size, ((seed * 37) % 256, (seed * 91) % 256, (seed * 53) % 256))
    im.putpixel((seed % size[0], 0), (255, 255, 255))
    buf = io.BytesIO()
    im.save(buf, format="JPEG")
    return buf.getvalue()


def png_bytes(size=(8, 6), value=255, box=None, mode="L") -> bytes:
    """A mask: `value` everywhere, or 0 outside `box` = (x0, y0, x1, y1) and 255 inside."""
    from PIL import Image
    im = Image.new(mode, size, 0 if box else value)
    if box:
        im.paste(255, box)
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return buf.getvalue()


def write_tar(path, members: dict, mode="w:gz") -> None:
    """`members`: archive name -> bytes, written in insertion order."""
    with tarfile.open(path, mode) as tf:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))


def vlcs_members(per_domain=(1, 2, 2, 2)) -> dict:
    """VLCS/<Domain>/<class>/<n>.jpg: `per_domain[i]` images per class in domain i."""
    members = {"VLCS/.DS_Store": b"junk"}
    seed = 0
    for domain, n in zip(VLCS_DOMAINS, per_domain):
        for cls in VLCS_CLASSES:
            for k in range(n):
                seed += 1
                members[f"VLCS/{domain}/{cls}/{k:09d}.jpg"] = jpeg_bytes(seed)
    return members


def vlcs_expected(per_domain=(1, 2, 2, 2)) -> dict:
    counts = {d: n * len(VLCS_CLASSES) for d, n in zip(VLCS_DOMAINS, per_domain)}
    return {"total": sum(counts.values()), **counts}


def terra_fixture():
    """(image members, annotation documents, expected tree {relpath: image name}).

    One image per (kept location, class), plus the cases upstream's rule decides: an image with
    two kept classes (copied into both), one annotated twice with the same class (one copy), one
    at an excluded location, one of an excluded category, one without annotation.
    """
    images, expected, docs = {}, {}, []
    categories = [{"id": i + 1, "name": c} for i, c in enumerate(TERRA_CLASSES)]
    categories.append({"id": 99, "name": "deer"})
    cat_id = {c["name"]: c["id"] for c in categories}
    imgs, anns = [], []
    seed = 0

    def add(name, location, classes):
        nonlocal seed
        seed += 1
        images[f"eccv_18_all_images_sm/{name}"] = jpeg_bytes(seed)
        imgs.append({"id": name[:-4], "file_name": name, "location": location,
                     "width": 8, "height": 6})
        for cls in classes:
            anns.append({"id": f"a{len(anns)}", "image_id": name[:-4], "category_id": cat_id[cls]})

    for loc in TERRA_LOCATIONS:
        for cls in TERRA_CLASSES:
            name = f"{loc}-{cls}.jpg"
            add(name, loc, [cls])
            expected[f"location_{loc}/{cls}/{name}"] = name
    add("two-classes.jpg", 38, ["cat", "dog"])
    expected["location_38/cat/two-classes.jpg"] = expected["location_38/dog/two-classes.jpg"] = \
        "two-classes.jpg"
    add("two-boxes.jpg", 100, ["bird", "bird"])
    expected["location_100/bird/two-boxes.jpg"] = "two-boxes.jpg"
    add("elsewhere.jpg", 33, ["cat"])
    add("deer.jpg", 43, ["deer"])
    add("unannotated.jpg", 46, [])
    # two split files like eccv_18_annotation_files/, locations as int in one and str in the other
    half = len(imgs) // 2
    ids = {im["id"] for im in imgs[:half]}
    docs.append({"info": {}, "categories": categories, "images": imgs[:half],
                 "annotations": [a for a in anns if a["image_id"] in ids]})
    docs.append({"info": {}, "categories": categories,
                 "images": [dict(im, location=str(im["location"])) for im in imgs[half:]],
                 "annotations": [a for a in anns if a["image_id"] not in ids]})
    return images, docs, expected


def write_terra_archives(folder):
    """Writes eccv_18_all_images_sm.tar.gz and eccv_18_annotations.tar.gz; returns paths, tree."""
    images, docs, expected = terra_fixture()
    img_path = folder / "eccv_18_all_images_sm.tar.gz"
    ann_path = folder / "eccv_18_annotations.tar.gz"
    write_tar(img_path, images)
    write_tar(ann_path, {
        "eccv_18_annotation_files/train_annotations.json": json.dumps(docs[0]).encode(),
        "eccv_18_annotation_files/cis_val_annotations.json": json.dumps(docs[1]).encode(),
    })
    return img_path, ann_path, {k: images[f"eccv_18_all_images_sm/{v}"] for k, v in expected.items()}


def write_zip(path, members: dict) -> None:
    """`members`: archive name -> bytes (a zip, as upstream's PACS, OfficeHome and DomainNet)."""
    import zipfile
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)


# Fabricated archives of the datasets upstream downloads as zips: a few classes, a few real
# JPEGs per class, under the prefix and with the extra files each real archive has.
PACS_DOMAINS = ("art_painting", "cartoon", "photo", "sketch")
OFFICE_HOME_DOMAINS = ("Art", "Clipart", "Product", "Real World")
DOMAIN_NET_DOMAINS = ("clipart", "infograph", "painting", "quickdraw", "real", "sketch")


def folder_members(prefix: str, domains, classes, per_class: int, seed0: int = 0,
                   size=(8, 6)) -> dict:
    """`<prefix><domain>/<class>/<k>.jpg` for every domain and class, `per_class` each."""
    members, seed = {}, seed0
    for domain in domains:
        for cls in classes:
            for k in range(per_class):
                seed += 1
                members[f"{prefix}{domain}/{cls}/{cls}_{k:03d}.jpg"] = jpeg_bytes(seed, size)
    return members


def _classes(name):
    from domainbed_align.datasets.image_folder import DomainNet, OfficeHome, PACS
    return {"PACS": PACS, "OfficeHome": OfficeHome, "DomainNet": DomainNet}[name].CLASSES


def pacs_members(classes=None, per_class=2) -> dict:
    """PACS.zip: kfold/<domain>/<class>/ (upstream renames kfold to PACS), plus macOS junk."""
    classes = classes or _classes("PACS")
    return {"kfold/.DS_Store": b"junk", **folder_members("kfold/", PACS_DOMAINS, classes, per_class)}


def office_home_members(classes=None, per_class=1) -> dict:
    """office_home.zip: OfficeHomeDataset_10072016/<Domain>/<class>/ and its two index files."""
    prefix = "OfficeHomeDataset_10072016/"
    return {f"{prefix}ImageInfo.csv": b"image,artist\n", f"{prefix}imagelist.txt": b"x\n",
            **folder_members(prefix, OFFICE_HOME_DOMAINS, classes or _classes("OfficeHome"),
                             per_class, seed0=100)}


def domain_net_members(two=("The_Eiffel_Tower", "zigzag")) -> dict:
    """{domain: members of <domain>.zip}, each holding <domain>/<class>/<image>: one image of
    every class, two of the classes in `two`."""
    out = {}
    for i, d in enumerate(DOMAIN_NET_DOMAINS):
        out[d] = folder_members("", [d], _classes("DomainNet"), 1, seed0=200 + 400 * i)
        out[d].update(folder_members("", [d], two, 2, seed0=200 + 400 * i))
    return out


def expected_counts(members: dict, domains) -> dict:
    """--expected_counts of a fabricated archive: per-domain image counts and the total."""
    counts = {d: sum(1 for k in members if d in k.split("/")[:-1] and k.endswith(".jpg"))
              for d in domains}
    return {"total": sum(counts.values()), **counts}


def tree(root) -> dict:
    """{relative path: bytes} of every non-hidden file under `root`."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and not any(part.startswith(".") for part in p.relative_to(root).parts)}


class RangeServer:
    """Threaded http.server on 127.0.0.1 serving bytes with Range/If-Range support.

    `stall_at`: a response that starts before this offset sends bytes up to it, then waits for
    `release` and closes the connection (what a killed or dropped transfer looks like).
    `drop_at`: the next response sends bytes up to this offset and closes at once.
    """

    def __init__(self, files: dict, etag='"v1"', content_type="application/gzip"):
        self.files, self.etag, self.content_type = files, etag, content_type
        self.requests = []
        self.stall_at = self.drop_at = None
        self.release = threading.Event()
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                server.requests.append((self.path, self.headers.get("Range"),
                                        self.headers.get("If-Range")))
                data = server.files.get(self.path)
                if data is None:
                    self.send_error(404)
                    return
                start, status = 0, 200
                m = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range") or "")
                if m and self.headers.get("If-Range") in (None, server.etag):
                    start, status = int(m.group(1)), 206
                    if start >= len(data):
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(data)}")
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                self.send_response(status)
                self.send_header("Content-Type", server.content_type)
                self.send_header("Content-Length", str(len(data) - start))
                self.send_header("ETag", server.etag)
                if status == 206:
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                self.end_headers()
                drop, server.drop_at = server.drop_at, None
                if drop is not None and start < drop:
                    self.wfile.write(data[start:drop])
                    self.close_connection = True
                    return
                stall = server.stall_at
                if stall is not None and start < stall:
                    self.wfile.write(data[start:stall])
                    self.wfile.flush()
                    server.release.wait(60)
                    self.close_connection = True
                    return
                self.wfile.write(data[start:])

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.02,), daemon=True)

    def url(self, path):
        return f"http://127.0.0.1:{self.httpd.server_address[1]}{path}"

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.release.set()
        self.httpd.shutdown()
        self.httpd.server_close()
