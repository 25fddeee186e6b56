"""How fast ``segmerge score --panoptic`` is against cityscapesscripts' evaluator and hotcoco.

Builds (once, cached in ``--workdir``) a Cityscapes-val-like panoptic set: ``--images``
scenes of the synthetic target domain rendered at 1024x2048 (with 4x the target's
vehicles and people, for Cityscapes' ~20 segments per image), in Cityscapes' ids (labelId * 1000 + k
for objects, labelId for stuff), with crowd regions (some of a class's objects merged into
one ``iscrowd`` segment, as Cityscapes labels groups) and void (the bonnet, a border and
small unlabelled patches), string image ids; and predictions perturbed from the ground
truth (segments shifted, eroded, split, merged, relabelled or dropped, spurious ones
added; random 24-bit segment ids; predictions listed in another order than the ground
truth).

Then times whole processes, alternating the tools run by run (so background load hits all
alike), and prints medians, ratios and peak memory. It asserts nothing, but checks that
the tools agree. Run it on an idle machine::

    .venv/bin/python benchmarks/score_speed.py --hotcoco-venv /tmp/hc-venv

``--hotcoco-venv`` is a virtualenv with ``hotcoco`` (and numpy, pillow) installed; without
it hotcoco is skipped. hotcoco rejects string image ids, so it reads copies of the two
JSON files with the ids numbered (written once, untimed). If that venv also has typer and
rich, ``segmerge score --engine hotcoco`` is timed there too, and ``segmerge score`` with
pyspng if that is installed there (segmerge's scoring needs no torch; it runs from segmerge's
source folder). ``--decoders`` times the PNG decoders importable there (Pillow, OpenCV, pyspng,
imagecodecs) and the inflate step alone (zlib, zlib-ng, isal, libdeflate), on the set's files.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

LAYOUT = 3  # bump when the set changes, so a cached one is rebuilt
HEIGHT, WIDTH = 1024, 2048
THING_BOOST = 4.0


# ----------------------------------------------------------------------------- the set


def _domain():
    from segmerge_bench.synthetic.domains import get_domain

    target = get_domain("target")
    things = ("car", "truck", "bus", "train", "person", "rider", "bicycle", "motorcycle")
    frequencies = {k: v * THING_BOOST if k in things else v for k, v in target.frequencies.items()}
    return target.replace(name="target-full", height=HEIGHT, width=WIDTH, frequencies=frequencies)


def _rect(rng, h, w, min_size, max_size):
    rh, rw = (int(v) for v in rng.integers(min_size, max_size, size=2))
    y, x = int(rng.integers(0, h - rh)), int(rng.integers(0, w - rw))
    return slice(y, y + rh), slice(x, x + rw)


def ground_truth(scene, label_ids, rng):
    """Cityscapes panoptic ids of a scene, with crowd regions and extra void.

    Returns (gt ids, gt segments, ids before void and crowd, categories of those ids).
    """
    from segmerge_bench.synthetic.writer import cityscapes_ids

    _, _, ids, segments = cityscapes_ids(scene, label_ids)
    ids = ids.astype(np.uint32)
    underneath = ids.copy()  # what a model sees: every object on its own, nothing void but the bonnet
    categories = {s["id"]: s["category_id"] for s in segments}
    crowd = {}
    by_class: dict[int, list[int]] = {}
    for s in segments:
        if s["id"] >= 1000:
            by_class.setdefault(s["category_id"], []).append(s["id"])
    for label_id, members in by_class.items():  # Cityscapes labels groups of objects as one crowd segment
        if len(members) >= 2 and rng.random() < 0.35:
            grouped = rng.choice(members, size=int(rng.integers(1, len(members))), replace=False)
            ids[np.isin(ids, grouped)] = label_id
            crowd[label_id] = label_id
    h, w = ids.shape
    ids[:6], ids[-6:], ids[:, :6], ids[:, -6:] = 0, 0, 0, 0  # rectification border
    for _ in range(int(rng.integers(3, 9))):  # unlabelled patches
        ids[_rect(rng, h, w, 8, 120)] = 0
    areas = np.bincount(ids.ravel())
    out = []
    for sid in np.flatnonzero(areas):
        if sid == 0:
            continue
        sid = int(sid)
        category = crowd.get(sid, categories.get(sid))
        out.append({"id": sid, "category_id": int(category), "iscrowd": int(sid in crowd), "area": int(areas[sid])})
    return ids, out, underneath, categories


def prediction(underneath, categories, known, rng):
    """A plausible model output: segments of ``underneath`` kept, shifted, eroded, split,
    merged, relabelled or dropped, a few spurious ones added; random 24-bit ids."""
    pred = underneath.copy()
    cats = dict(categories)
    if 7 in cats:  # Cityscapes' road: the bonnet is predicted as road
        pred[pred == 0] = 7
    h, w = pred.shape
    things = [s for s in cats if s >= 1000]
    stuff = [s for s in cats if s < 1000]
    fill = stuff or [0]
    next_id = 1_000_000
    for sid in list(cats):
        action = rng.choice(
            ["keep", "keep", "shift", "shift", "shift", "erode", "split", "merge", "relabel", "drop"],
        )
        ys, xs = np.nonzero(pred[::8, ::8] == sid)
        if not len(ys):
            continue
        y0, y1 = max(int(ys.min()) * 8 - 16, 0), min(int(ys.max()) * 8 + 24, h)
        x0, x1 = max(int(xs.min()) * 8 - 16, 0), min(int(xs.max()) * 8 + 24, w)
        box = pred[y0:y1, x0:x1]
        mask = box == sid
        if action == "shift":
            scale = 0.1 if sid >= 1000 else 0.03
            dy = int(rng.normal(0, scale * max(y1 - y0, 8)))
            dx = int(rng.normal(0, scale * max(x1 - x0, 8)))
            box[mask] = int(rng.choice(fill)) if sid >= 1000 else box[mask]
            box[np.roll(mask, (dy, dx), axis=(0, 1))] = sid
        elif action == "erode":
            k = int(rng.integers(2, 12))
            inner = mask.copy()
            inner[k:] &= mask[:-k]
            inner[:-k] &= mask[k:]
            inner[:, k:] &= mask[:, :-k]
            inner[:, :-k] &= mask[:, k:]
            box[mask & ~inner] = int(rng.choice(fill))
        elif action == "split" and sid >= 1000:
            cut = int(rng.integers(1, max(mask.shape[1], 2)))
            side = mask.copy()
            side[:, :cut] = False
            box[side] = next_id
            cats[next_id] = cats[sid]
            next_id += 1
        elif action == "merge":
            same = [s for s in (things if sid >= 1000 else stuff) if s != sid and cats[s] == cats[sid]]
            if same:
                pred[pred == int(rng.choice(same))] = sid
        elif action == "relabel":
            cats[sid] = int(rng.choice([c for c in known if c != cats[sid]]))
        elif action == "drop" and sid >= 1000:
            box[mask] = int(rng.choice(fill))
    for _ in range(int(rng.integers(1, 6))):  # spurious detections
        pred[_rect(rng, h, w, 10, 160)] = next_id
        cats[next_id] = int(rng.choice(known))
        next_id += 1
    present = np.flatnonzero(np.bincount(pred.ravel(), minlength=1))
    present = [int(s) for s in present if s != 0]
    new_ids = rng.choice(np.arange(1, 2**24), size=len(present), replace=False)
    table = np.zeros(int(pred.max()) + 1, dtype=np.uint32)
    table[present] = new_ids
    out = np.take(table, pred)
    info = [{"id": int(n), "category_id": int(cats[s])} for s, n in zip(present, new_ids, strict=True)]
    rng.shuffle(info)
    return out, info


def _rgb(ids: np.ndarray) -> np.ndarray:
    return np.stack([ids & 255, (ids >> 8) & 255, (ids >> 16) & 255], axis=-1).astype(np.uint8)


def build_set(root: Path, n: int, seed: int) -> Path:
    """Write gt/ pred/ folders, gt.json, pred.json (string ids), gt_int.json and pred_int.json
    (numbered ids, for hotcoco) under ``root/set-N-SEED``; reuse them when already there."""
    from PIL import Image

    from segmerge_bench.synthetic.scenes import render
    from segmerge_bench.synthetic.writer import label_id_table, panoptic_categories

    folder = root / f"set-v{LAYOUT}-{n}-{seed}"
    if (folder / "done").is_file():
        return folder
    tmp = Path(tempfile.mkdtemp(prefix=".building-", dir=root))
    domain = _domain()
    label_ids = label_id_table()
    categories = panoptic_categories()
    known = [c["id"] for c in categories]
    (tmp / "gt").mkdir()
    (tmp / "pred").mkdir()
    rng = np.random.default_rng(seed)
    gt_anns, pred_anns = [], []
    start = time.perf_counter()
    for i in range(n):
        scene = render(domain, seed, i)
        gt_ids, gt_info, underneath, cats = ground_truth(scene, label_ids, rng)
        pred_ids, pred_info = prediction(underneath, cats, known, rng)
        name = f"frankfurt_{seed:06d}_{i:06d}"
        Image.fromarray(_rgb(gt_ids)).save(tmp / "gt" / f"{name}_gtFine_panoptic.png")
        Image.fromarray(_rgb(pred_ids)).save(tmp / "pred" / f"{name}_pred.png")
        gt_anns.append({"image_id": name, "file_name": f"{name}_gtFine_panoptic.png", "segments_info": gt_info})
        pred_anns.append({"image_id": name, "file_name": f"{name}_pred.png", "segments_info": pred_info})
        if (i + 1) % 10 == 0:
            print(f"  built {i + 1}/{n} images ({time.perf_counter() - start:.0f} s)", file=sys.stderr)
    rng.shuffle(pred_anns)
    images = [{"id": a["image_id"], "file_name": a["image_id"] + "_leftImg8bit.png", "height": HEIGHT, "width": WIDTH}
              for a in gt_anns]  # fmt: skip
    (tmp / "gt.json").write_text(json.dumps({"images": images, "annotations": gt_anns, "categories": categories}))
    (tmp / "pred.json").write_text(json.dumps({"annotations": pred_anns, "categories": categories}))
    number = {a["image_id"]: k + 1 for k, a in enumerate(gt_anns)}
    images_int = [{**im, "id": number[im["id"]]} for im in images]
    gt_int = [{**a, "image_id": number[a["image_id"]]} for a in gt_anns]
    pred_int = [{**a, "image_id": number[a["image_id"]]} for a in pred_anns]
    gt_doc = {"images": images_int, "annotations": gt_int, "categories": categories}
    (tmp / "gt_int.json").write_text(json.dumps(gt_doc))
    (tmp / "pred_int.json").write_text(json.dumps({"annotations": pred_int, "categories": categories}))
    (tmp / "done").write_text("")
    if folder.exists():
        shutil.rmtree(folder)
    os.replace(tmp, folder)
    return folder


# ----------------------------------------------------------------------------- timing


def _tree_pss_kib(root: int) -> int:
    """Proportional set size of ``root`` and its descendants (KiB), shared pages split between them."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                ppid = int(fh.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    total, todo = 0, [root]
    while todo:
        pid = todo.pop()
        todo.extend(children.get(pid, []))
        try:
            with open(f"/proc/{pid}/smaps_rollup") as fh:
                total += next(int(line.split()[1]) for line in fh if line.startswith("Pss:"))
        except (OSError, StopIteration):
            pass
    return total


def run_once(command: list[str], env: dict) -> dict:
    """Wall seconds, CPU seconds, the largest process's peak RSS and the peak PSS of the whole tree."""
    peak = [0]
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        start = time.perf_counter()
        proc = subprocess.Popen(command, env=env, stdout=out, stderr=err)
        done = threading.Event()

        def sample() -> None:
            while not done.wait(0.02):
                peak[0] = max(peak[0], _tree_pss_kib(proc.pid))

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        _, status, usage = os.wait4(proc.pid, 0)  # this child's own usage (and its reaped children's)
        wall = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        done.set()
        sampler.join()
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read().decode(), err.read().decode()
    if proc.returncode:
        raise SystemExit(f"{' '.join(command)} failed ({proc.returncode}):\n{stderr[-3000:]}")
    return {
        "wall": wall,
        "cpu": usage.ru_utime + usage.ru_stime,
        "maxrss_mib": usage.ru_maxrss / 1024,
        "pss_peak_mib": peak[0] / 1024,
        "stdout": stdout,
    }


def tools(folder: Path, hotcoco_python: str | None, before_src: Path | None, workers: int | None) -> dict:
    """name -> (command, environment): every tool reads the same files."""
    import segmerge

    src = str(Path(segmerge.__file__).resolve().parents[1])
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    f = {k: str(folder / k) for k in ("gt.json", "gt", "pred.json", "pred", "gt_int.json", "pred_int.json")}
    panoptic = ["score", "--panoptic", "--gt-json", f["gt.json"], "--gt-dir", f["gt"],
                "--pred-json", f["pred.json"], "--pred-dir", f["pred"], "--json"]  # fmt: skip
    if workers is not None:
        panoptic += ["--workers", str(workers)]
    out = {"segmerge score": ([sys.executable, "-m", "segmerge", *panoptic], env)}
    if before_src is not None:
        before = [sys.executable, "-m", "segmerge", *panoptic[: panoptic.index("--json") + 1]]
        out["segmerge score (before)"] = (before, {**env, "PYTHONPATH": str(before_src)})
    results = folder / "cityscapesscripts-results.json"
    out["cityscapesscripts"] = (
        [sys.executable, "-m", "cityscapesscripts.evaluation.evalPanopticSemanticLabeling",
         "--gt-json-file", f["gt.json"], "--gt-folder", f["gt"], "--prediction-json-file", f["pred.json"],
         "--prediction-folder", f["pred"], "--results_file", str(results)],
        env,
    )  # fmt: skip
    if hotcoco_python is not None:
        code = (
            "import json, sys\nfrom hotcoco.panoptic import pq_compute\n"
            f"r = pq_compute({f['gt_int.json']!r}, {f['pred_int.json']!r}, {f['gt']!r}, {f['pred']!r})\n"
            "sys.stdout.write('\\nRESULT ' + json.dumps({k: r[k] for k in ('All', 'Things', 'Stuff')}))\n"
        )
        out["hotcoco"] = ([hotcoco_python, "-c", code], env)
        has_typer = subprocess.run([hotcoco_python, "-c", "import typer, rich"], capture_output=True).returncode == 0
        has_spng = subprocess.run([hotcoco_python, "-c", "import pyspng"], capture_output=True).returncode == 0
        if has_typer:  # segmerge's scoring imports no torch: it runs in that venv from segmerge's source
            venv_env = {**env, "PYTHONPATH": src}
            if has_spng:
                out["segmerge score, pyspng installed"] = ([hotcoco_python, "-m", "segmerge", *panoptic], venv_env)
            out["segmerge score --engine hotcoco"] = (
                [hotcoco_python, "-m", "segmerge", *panoptic, "--engine", "hotcoco"],
                venv_env,
            )
    return out


def scores(name: str, run: dict, folder: Path) -> tuple[float, float, float]:
    """PQ of all, things, stuff (percent) as the tool printed or wrote them."""
    if name.startswith("segmerge"):
        data = json.loads(run["stdout"])
        return data["pq"], data["pq_things"], data["pq_stuff"]
    if name == "cityscapesscripts":
        data = json.loads((folder / "cityscapesscripts-results.json").read_text())
    else:
        data = json.loads(run["stdout"].rsplit("RESULT ", 1)[1])
    return tuple(100 * data[g]["pq"] for g in ("All", "Things", "Stuff"))


DECODERS = """
import glob, struct, sys, time, zlib
import numpy as np
files = sorted(glob.glob(sys.argv[1] + "/gt/*.png"))[:40] + sorted(glob.glob(sys.argv[1] + "/pred/*.png"))[:40]
tools = {}
from PIL import Image, ImageFile, features
def pil_load(f):
    with Image.open(f) as im:
        im.load()
def pil(f):
    with Image.open(f) as im:
        return im.tobytes("raw", "RGBX")
def pil_one_piece(f):
    block, ImageFile.MAXBLOCK = ImageFile.MAXBLOCK, 1 << 26
    try:
        return pil(f)
    finally:
        ImageFile.MAXBLOCK = block
name = f"Pillow {Image.__version__} (zlib {features.version('zlib')})"
tools[name + ", decoding only"] = pil_load
tools[name + ", decoded and copied out (tobytes)"] = pil
tools[name + ", decoded and copied out in one piece (segmerge)"] = pil_one_piece
try:
    import cv2
    cv2.setNumThreads(1)
    tools[f"OpenCV {cv2.__version__} cv2.imread"] = lambda f: cv2.imread(f, cv2.IMREAD_UNCHANGED)
except ImportError:
    pass
try:
    import pyspng
    tools["pyspng (libspng)"] = lambda f: pyspng.load(open(f, "rb").read())
except ImportError:
    pass
try:
    import imagecodecs
    tools["imagecodecs png_decode (libpng)"] = lambda f: imagecodecs.png_decode(open(f, "rb").read())
except ImportError:
    imagecodecs = None
def idat(f):
    data, pos, out = open(f, "rb").read(), 8, []
    while pos < len(data):
        (n,) = struct.unpack(">I", data[pos : pos + 4])
        if data[pos + 4 : pos + 8] == b"IDAT":
            out.append(data[pos + 8 : pos + 8 + n])
        pos += 12 + n
    return b"".join(out)
streams = [idat(f) for f in files]
inflate = {"inflate only: zlib " + zlib.ZLIB_RUNTIME_VERSION: zlib.decompress}
try:
    from zlib_ng import zlib_ng
    inflate["inflate only: zlib-ng"] = zlib_ng.decompress
except ImportError:
    pass
try:
    from isal import isal_zlib
    inflate["inflate only: isal"] = isal_zlib.decompress
except ImportError:
    pass
if imagecodecs is not None:
    inflate["inflate only: libdeflate (imagecodecs)"] = lambda d: imagecodecs.deflate_decode(d, out=1 << 23)
for _ in range(2):  # the second round is printed
    lines = []
    for name, fn in tools.items():
        start = time.process_time()
        for f in files:
            fn(f)
        lines.append(f"  {name}: {1000 * (time.process_time() - start) / len(files):.1f} ms CPU per image")
    for name, fn in inflate.items():
        start = time.process_time()
        for d in streams:
            fn(d)
        lines.append(f"  {name}: {1000 * (time.process_time() - start) / len(streams):.1f} ms CPU per image")
print("\\n".join(lines))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/segmerge-score-bench"))
    parser.add_argument("--images", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=5, help="runs of each tool, alternating [5]")
    parser.add_argument("--hotcoco-venv", type=Path, help="a virtualenv with hotcoco, numpy and pillow")
    parser.add_argument("--workers", type=int, help="segmerge score --workers [all cores]")
    parser.add_argument("--before-src", type=Path, help="also time the segmerge whose src/ folder this is")
    parser.add_argument("--decoders", action="store_true", help="also time the PNG decoders of --hotcoco-venv")
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    print(f"building (or reusing) the set in {args.workdir} ...", file=sys.stderr)
    folder = build_set(args.workdir, args.images, args.seed)
    gt = json.loads((folder / "gt.json").read_text())
    segments = [len(a["segments_info"]) for a in gt["annotations"]]
    crowd = sum(s["iscrowd"] for a in gt["annotations"] for s in a["segments_info"])
    hotcoco_python = None
    if args.hotcoco_venv is not None:
        hotcoco_python = str(args.hotcoco_venv / "bin" / "python")
        check = subprocess.run([hotcoco_python, "-c", "import hotcoco"], capture_output=True)
        if check.returncode:
            raise SystemExit(f"{hotcoco_python}: cannot import hotcoco")
    commands = tools(folder, hotcoco_python, args.before_src, args.workers)
    runs: dict[str, list[dict]] = {name: [] for name in commands}
    loads = [os.getloadavg()[0]]
    for _ in range(args.repeats):
        for name, (command, env) in commands.items():
            runs[name].append(run_once(command, env))
        loads.append(os.getloadavg()[0])

    print(
        f"set: {args.images} images {HEIGHT}x{WIDTH}, {statistics.mean(segments):.1f} ground-truth segments per "
        f"image ({min(segments)}-{max(segments)}), {crowd} crowd segments, void in every image; {folder}"
    )
    print(
        f"machine: {os.cpu_count()} cores, {platform.processor() or platform.machine()}, Python "
        f"{platform.python_version()}; 1-minute load average {min(loads):.2f}-{max(loads):.2f} during the runs"
    )
    print(f"medians of {args.repeats} runs per tool, alternating; whole process (interpreter start included)\n")
    med = {name: statistics.median(r["wall"] for r in rs) for name, rs in runs.items()}
    print("| tool | wall s | CPU s | per image ms | vs cityscapesscripts | vs hotcoco | peak PSS, all processes MiB "
          "| peak RSS, largest process MiB | PQ |")  # fmt: skip
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    reference = scores("cityscapesscripts", runs["cityscapesscripts"][-1], folder)
    for name, rs in runs.items():
        pq = scores(name, rs[-1], folder)
        agree = all(abs(a - b) <= 1e-9 * max(1.0, abs(b)) for a, b in zip(pq, reference, strict=True))
        vs_hc = f"{med[name] / med['hotcoco']:.2f}x" if "hotcoco" in med else "-"
        print(
            f"| {name} | {med[name]:.2f} | {statistics.median(r['cpu'] for r in rs):.2f} "
            f"| {1000 * med[name] / args.images:.1f} | {med[name] / med['cityscapesscripts']:.2f}x | {vs_hc} "
            f"| {max(r['pss_peak_mib'] for r in rs):.0f} | {statistics.median(r['maxrss_mib'] for r in rs):.0f} "
            f"| {pq[0]:.4f}{'' if agree else ' (DIFFERS)'} |"
        )
    print("\nPQ (all / things / stuff) of cityscapesscripts: " + " / ".join(f"{v:.4f}" for v in reference))
    print("per-run wall seconds:")
    for name, rs in runs.items():
        print(f"  {name}: " + " ".join(f"{r['wall']:.2f}" for r in rs))
    if args.decoders:
        python = hotcoco_python or sys.executable
        print(f"\nPNG decoding, one process, {python} (load average {os.getloadavg()[0]:.2f}):")
        print(subprocess.run([python, "-c", DECODERS, str(folder)], capture_output=True, text=True, check=True).stdout)


if __name__ == "__main__":
    main()
