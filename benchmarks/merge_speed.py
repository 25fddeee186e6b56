#!/usr/bin/env python
"""How fast, and in how much memory, segmerge merges DAFormer-sized checkpoints.

Prints figures; asserts nothing. See benchmarks/README.md for how to run and read it.

    .venv/bin/python benchmarks/merge_speed.py                       # everything but mergekit
    .venv/bin/python benchmarks/merge_speed.py --setup-mergekit      # build /tmp/mergekit-venv, then compare
    .venv/bin/python benchmarks/merge_speed.py --mergekit-venv /tmp/mergekit-venv

What it does:

1. Generates (once, cached in --workdir, default /tmp/segmerge-bench) N synthetic fp32
   checkpoints shaped like a DAFormer model: a MiT-B5 backbone (depths 3/6/40/3, widths
   64/128/320/512, efficient attention q/kv/proj with a spatial-reduction conv in stages
   1-3, Mix-FFN fc1/dwconv/fc2 with ratio 4, norms, overlapping patch embeddings) and a
   DAFormer decode head (MLP embeddings, depthwise-separable ASPP fusion, conv_seg), about
   85M parameters / 340 MB, with mmseg key names (``backbone.block3.12.attn.q.weight``).
   Values are a shared random base plus a small per-model delta, as fine-tunes of one
   pre-trained model are. Each model is saved as ``.safetensors`` and as an mmseg-style
   ``.pth`` (``{"state_dict": ..., "meta": {...}}``); every model is a distinct file.
2. Reads every input once (warm page cache), then runs each variant in a fresh process,
   ``--repeats`` rounds, alternating (one run of every variant per round, so a change in the
   machine's load hits all of them alike), and reports the median time and the median peak
   RSS (the child's ``ru_maxrss`` from ``os.wait4``), for 3 and for ``--many`` inputs, as
   ``.safetensors``, ``.pth`` and Hugging Face folders (``config.json`` + ``model.safetensors``).
3. Optionally times mergekit's ``linear`` merge of the same three models, saved as
   Hugging Face-style folders, in mergekit's own virtualenv.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve()
REPO = HERE.parent.parent
SPEC_VERSION = 1  # bump when the generated models change, to regenerate the cache

# --------------------------------------------------------------------------------------
# The synthetic model: MiT-B5 backbone + DAFormer head, in mmseg key names and order.
# --------------------------------------------------------------------------------------

DEPTHS = (3, 6, 40, 3)
DIMS = (64, 128, 320, 512)
SR_RATIOS = (8, 4, 2, 1)
MLP_RATIO = 4
HEAD_CHANNELS = 256
NUM_CLASSES = 19
ASPP_DILATIONS = (1, 6, 12, 18)
BN_ITERS = 40000


def daformer_mitb5_layout() -> list[tuple[str, tuple[int, ...], str]]:
    """(key, shape, kind) in module registration order; kind picks the value distribution."""
    out: list[tuple[str, tuple[int, ...], str]] = []

    def linear(name, n_in, n_out):
        out.append((f"{name}.weight", (n_out, n_in), "weight"))
        out.append((f"{name}.bias", (n_out,), "bias"))

    def conv(name, n_in, n_out, k, groups=1, bias=True):
        out.append((f"{name}.weight", (n_out, n_in // groups, k, k), "weight"))
        if bias:
            out.append((f"{name}.bias", (n_out,), "bias"))

    def layer_norm(name, dim):
        out.append((f"{name}.weight", (dim,), "norm_weight"))
        out.append((f"{name}.bias", (dim,), "bias"))

    def batch_norm(name, dim):
        out.append((f"{name}.weight", (dim,), "norm_weight"))
        out.append((f"{name}.bias", (dim,), "bias"))
        out.append((f"{name}.running_mean", (dim,), "running_mean"))
        out.append((f"{name}.running_var", (dim,), "running_var"))
        out.append((f"{name}.num_batches_tracked", (), "count"))

    # MixVisionTransformer registers the four patch embeddings first, then block_i/norm_i.
    patch = ((7, 3), (3, DIMS[0]), (3, DIMS[1]), (3, DIMS[2]))
    for i, (k, n_in) in enumerate(patch):
        conv(f"backbone.patch_embed{i + 1}.proj", n_in, DIMS[i], k)
        layer_norm(f"backbone.patch_embed{i + 1}.norm", DIMS[i])
    for stage, (depth, dim, sr) in enumerate(zip(DEPTHS, DIMS, SR_RATIOS, strict=True)):
        for j in range(depth):
            b = f"backbone.block{stage + 1}.{j}"
            layer_norm(f"{b}.norm1", dim)
            linear(f"{b}.attn.q", dim, dim)
            linear(f"{b}.attn.kv", dim, 2 * dim)
            linear(f"{b}.attn.proj", dim, dim)
            if sr > 1:
                conv(f"{b}.attn.sr", dim, dim, sr)
                layer_norm(f"{b}.attn.norm", dim)
            layer_norm(f"{b}.norm2", dim)
            hidden = dim * MLP_RATIO
            linear(f"{b}.mlp.fc1", dim, hidden)
            conv(f"{b}.mlp.dwconv.dwconv", hidden, hidden, 3, groups=hidden)
            linear(f"{b}.mlp.fc2", hidden, dim)
        layer_norm(f"backbone.norm{stage + 1}", dim)
    # DAFormerHead: BaseDecodeHead's conv_seg first, then embed_layers, then fuse_layer.
    c = HEAD_CHANNELS
    conv("decode_head.conv_seg", c, NUM_CLASSES, 1)
    for i, dim in enumerate(DIMS):
        linear(f"decode_head.embed_layers.{i}.proj", dim, c)
    fused = c * len(DIMS)
    for i, dilation in enumerate(ASPP_DILATIONS):
        m = f"decode_head.fuse_layer.aspp_modules.{i}"
        if dilation == 1:
            conv(f"{m}.conv", fused, c, 1, bias=False)
            batch_norm(f"{m}.bn", c)
        else:  # depthwise-separable ConvModule
            conv(f"{m}.depthwise_conv.conv", fused, fused, 3, groups=fused, bias=False)
            batch_norm(f"{m}.depthwise_conv.bn", fused)
            conv(f"{m}.pointwise_conv.conv", fused, c, 1, bias=False)
            batch_norm(f"{m}.pointwise_conv.bn", c)
    conv("decode_head.fuse_layer.bottleneck.conv", c * len(ASPP_DILATIONS), c, 3, bias=False)
    batch_norm("decode_head.fuse_layer.bottleneck.bn", c)
    return out


def _base_value(torch, shape, kind, gen):
    if kind == "count":
        return torch.tensor(BN_ITERS, dtype=torch.int64)
    t = torch.randn(shape, generator=gen, dtype=torch.float32)
    if kind == "weight":
        return t.mul_(0.02)
    if kind == "norm_weight":
        return t.mul_(0.05).add_(1.0)
    if kind == "running_var":
        return t.abs_().add_(0.5)
    return t.mul_(0.01)  # biases, running means


def make_state(torch, layout, model_index: int, base: dict | None):
    """The shared base (model_index None) or base + this model's small delta."""
    gen = torch.Generator().manual_seed(1000 + (model_index if model_index is not None else -1))
    state = {}
    for key, shape, kind in layout:
        if base is None:
            state[key] = _base_value(torch, shape, kind, gen)
        elif kind == "count":
            state[key] = base[key].clone()
        else:
            delta = torch.randn(shape, generator=gen, dtype=torch.float32).mul_(0.002)
            value = base[key] + delta
            if kind == "running_var":
                value.clamp_(min=1e-3)
            state[key] = value
    return state


def mmseg_meta(i: int) -> dict:
    return {
        "mmseg_version": "0.16.0+synthetic",
        "config": f"# synthetic DAFormer MiT-B5 model {i} (segmerge benchmark)\nnorm_cfg = dict(type='BN')\n",
        "CLASSES": [
            "road",
            "sidewalk",
            "building",
            "wall",
            "fence",
            "pole",
            "traffic light",
            "traffic sign",
            "vegetation",
            "terrain",
            "sky",
            "person",
            "rider",
            "car",
            "truck",
            "bus",
            "train",
            "motorcycle",
            "bicycle",
        ],  # fmt: skip
        "PALETTE": [[128, 64, 128]] * NUM_CLASSES,
        "seed": i,
        "iter": BN_ITERS,
        "epoch": 1,
        "exp_name": f"synthetic_{i}.py",
    }


HF_CONFIG = {
    # A real SegFormer (MiT-B5) config, so AutoConfig reads it; the architecture name is the
    # DAFormer segmentor, which transformers (and so mergekit) cannot build: mergekit then
    # infers the layout from the tensor names in model.safetensors.
    "architectures": ["DAFormerSegmentor"],
    "model_type": "segformer",
    "num_channels": 3,
    "num_encoder_blocks": 4,
    "depths": list(DEPTHS),
    "hidden_sizes": list(DIMS),
    "sr_ratios": list(SR_RATIOS),
    "num_attention_heads": [1, 2, 5, 8],
    "patch_sizes": [7, 3, 3, 3],
    "strides": [4, 2, 2, 2],
    "mlp_ratios": [MLP_RATIO] * 4,
    "decoder_hidden_size": HEAD_CHANNELS,
    "num_labels": NUM_CLASSES,
    "torch_dtype": "float32",
}


def model_paths(workdir: Path, count: int, fmt: str) -> list[Path]:
    ext = "safetensors" if fmt == "safetensors" else "pth"
    return [workdir / "models" / f"daformer_mitb5_{i:02d}.{ext}" for i in range(count)]


def hf_folders(workdir: Path, count: int) -> list[Path]:
    return [workdir / "hf" / f"daformer_mitb5_{i:02d}" for i in range(count)]


def generate(workdir: Path, count: int) -> None:
    """Write ``count`` models in both formats (and HF folders for the first three), cached."""
    import torch
    from safetensors.torch import save_file

    stamp = workdir / "models" / "manifest.json"
    want = {"spec": SPEC_VERSION, "count": count}
    if stamp.is_file():
        have = json.loads(stamp.read_text())
        if have.get("spec") == SPEC_VERSION and have.get("count", 0) >= count:
            if all(p.is_file() for f in ("safetensors", "pth") for p in model_paths(workdir, count, f)):
                return
    (workdir / "models").mkdir(parents=True, exist_ok=True)
    layout = daformer_mitb5_layout()
    print(f"generating {count} synthetic DAFormer MiT-B5 checkpoints in {workdir / 'models'} ...", flush=True)
    base = make_state(torch, layout, None, None)
    for i, (st, pth) in enumerate(
        zip(model_paths(workdir, count, "safetensors"), model_paths(workdir, count, "pth"), strict=True)
    ):
        state = make_state(torch, layout, i, base)
        save_file(state, str(st), metadata={"format": "pt"})
        torch.save({"state_dict": state, "meta": mmseg_meta(i)}, pth)
        del state
        print(f"  {st.name} / {pth.name}", flush=True)
    stamp.write_text(json.dumps(want))


def make_hf_folders(workdir: Path, count: int = 3) -> list[Path]:
    """The first ``count`` models as HF-style folders (config.json + model.safetensors).

    model.safetensors is a copy, not a hardlink, so it has page-cache pages of its own.
    """
    folders = hf_folders(workdir, count)
    for folder, src in zip(folders, model_paths(workdir, count, "safetensors"), strict=True):
        weights = folder / "model.safetensors"
        if weights.is_file() and weights.stat().st_size == src.stat().st_size:
            continue
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "config.json").write_text(json.dumps(HF_CONFIG, indent=2))
        shutil.copyfile(src, weights)
    return folders


# --------------------------------------------------------------------------------------
# Child processes: each variant runs in a fresh interpreter; it prints its own timing of
# the work (after imports) as JSON on its last stdout line.
# --------------------------------------------------------------------------------------


def child(argv: list[str]) -> None:
    case, fmt, out, *inputs = argv
    if case.startswith("segmerge"):
        import segmerge
        import segmerge.api  # noqa: F401 - `import segmerge` is lazy: load the merge code before the clock starts

        _, method, *flags = case.split(":")
        if "nohash" in flags:  # diagnostic: what the input hashing (provenance) costs
            from segmerge.checkpoints import provenance

            provenance.sha256_of = lambda path: "0" * 64
        from segmerge.merging.execute import single_threaded

        t0 = time.perf_counter()
        with single_threaded():  # as the CLI runs it, and as the floor runs (one torch thread)
            segmerge.merge_to_file(inputs, output=out, overwrite=True, method=method)
        seconds = time.perf_counter() - t0
    elif case == "floor":
        seconds = _floor(fmt, out, inputs)
    elif case == "naive":
        seconds = _naive(fmt, out, inputs)
    else:
        raise SystemExit(f"unknown case {case}")
    print(json.dumps({"seconds": seconds}))


def _fsync(path: str) -> None:
    # segmerge's safetensors writer fsyncs its output; the baselines do the same for that
    # format so that the comparison is of the same work (no fsync for .pth, like segmerge).
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _weights(fmt: str, path: str) -> str:
    """The file holding an input's tensors: a Hugging Face folder's model.safetensors."""
    return str(Path(path) / "model.safetensors") if fmt == "hf" else path


def _write_safetensors(fmt: str, tensors: dict, out: str, first_input: str) -> None:
    from safetensors.torch import save_file

    if fmt == "hf":  # a folder like the inputs: their config.json beside the weights
        Path(out).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(Path(first_input) / "config.json", Path(out) / "config.json")
        out = str(Path(out) / "model.safetensors")
    save_file(tensors, out, metadata={"format": "pt"})
    _fsync(out)


def _floor(fmt: str, out: str, inputs: list[str]) -> float:
    """Read every input tensor once, write the anchor's tensors: no arithmetic.

    On one torch thread, as segmerge's merge loop runs: with torch's default threads, the
    big ``.clone()`` copies of the ``.pth`` floor ran up to 3x slower on a loaded 2-core
    machine (every parallel region waits for a descheduled worker), which is no floor.
    """
    import torch

    torch.set_num_threads(1)
    t0 = time.perf_counter()
    if fmt in ("safetensors", "hf"):
        from safetensors import safe_open

        # get_tensor maps the file and reads nothing until the tensor is used: the anchor's
        # bytes are read by the save; the donors' are copied out here, as the .pth floor does.
        handles = [safe_open(_weights(fmt, p), "pt") for p in inputs]
        anchor = {}
        for key in handles[0].keys():
            anchor[key] = handles[0].get_tensor(key)
            for h in handles[1:]:
                h.get_tensor(key).clone()
        _write_safetensors(fmt, anchor, out, inputs[0])
    else:
        loaded = [torch.load(p, map_location="cpu", mmap=True, weights_only=True) for p in inputs]
        states = [obj["state_dict"] for obj in loaded]
        anchor = {}
        for key in states[0]:
            anchor[key] = states[0][key].clone()
            for s in states[1:]:
                s[key].clone()
        torch.save({"state_dict": anchor, "meta": loaded[0]["meta"]}, out)
    return time.perf_counter() - t0


def _naive(fmt: str, out: str, inputs: list[str]) -> float:
    """Load every model whole, average in float32, save."""
    import torch

    t0 = time.perf_counter()
    if fmt in ("safetensors", "hf"):
        from safetensors.torch import load_file

        states = [load_file(_weights(fmt, p)) for p in inputs]
    else:
        loaded = [torch.load(p, map_location="cpu", weights_only=True) for p in inputs]
        states = [obj["state_dict"] for obj in loaded]
    merged = {}
    for key, first in states[0].items():
        if first.is_floating_point():
            merged[key] = sum(s[key].float() for s in states) / len(states)
        else:
            merged[key] = first.clone()
    if fmt in ("safetensors", "hf"):
        _write_safetensors(fmt, merged, out, inputs[0])
    else:
        torch.save({"state_dict": merged, "meta": loaded[0]["meta"]}, out)
    return time.perf_counter() - t0


# --------------------------------------------------------------------------------------
# Measuring
# --------------------------------------------------------------------------------------


def run_measured(cmd: list[str], env: dict | None = None, log: Path | None = None) -> dict:
    """Run ``cmd`` in a fresh process: wall seconds, peak RSS (bytes), the child's own timing."""
    stdout_path = log or Path(os.devnull)
    with open(stdout_path, "w") as sink_err:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=sink_err, env=env, text=True)
        stdout = proc.stdout.read()
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    proc.stdout.close()
    if proc.returncode != 0:
        tail = log.read_text()[-3000:] if log and log.is_file() else ""
        raise RuntimeError(f"{' '.join(cmd)} exited {proc.returncode}\n{tail}")
    result = {
        "wall": wall,
        "cpu": usage.ru_utime + usage.ru_stime,  # all threads; less sensitive to other load than wall time
        "rss": usage.ru_maxrss * 1024,  # Linux reports KiB
        "load": os.getloadavg()[0],
    }
    lines = [line for line in stdout.strip().splitlines() if line.startswith("{")]
    if lines:
        result.update(json.loads(lines[-1]))
    return result


def warm_cache(paths: list[Path]) -> None:
    for path in paths:
        files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
        for file in files:
            with open(file, "rb", buffering=0) as f:
                while f.read(16 << 20):
                    pass


def settle() -> None:
    """Flush dirty pages left by the previous run so they do not slow the next one."""
    os.sync()
    time.sleep(0.2)


class Runner:
    def __init__(self, workdir: Path, repeats: int, verbose: bool = True):
        self.workdir = workdir
        self.repeats = repeats
        self.verbose = verbose
        self.logs = workdir / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.results: dict[str, dict] = {}

    def measure(self, name: str, cmd: list[str], outputs: list[Path] = (), repeats: int | None = None,
                env: dict | None = None) -> dict:  # fmt: skip
        """Run one variant ``repeats`` times in a row."""
        runs = [self._run_once(name, cmd, outputs, r, env) for r in range(repeats or self.repeats)]
        return self._summarise(name, runs)

    def alternate(self, jobs: list[tuple[str, list[str], list[Path], int]]) -> None:
        """Run every job once per round, for as many rounds as the most repeated job asks (a job
        takes part in its first ``repeats`` rounds): a change in the machine's load during the run
        then hits every variant alike. Each round runs the jobs in its own seeded shuffled order:
        in a fixed order the job after a 4 GB floor process always paid for that process's exit
        (up to 25% slower in one run), and a median over rounds cannot remove a bias every round shares."""
        runs: dict[str, list[dict]] = {name: [] for name, *_ in jobs}
        for r in range(max(repeats for *_, repeats in jobs)):
            order = list(jobs)
            random.Random(r).shuffle(order)
            for name, cmd, outputs, repeats in order:
                if r < repeats:
                    runs[name].append(self._run_once(name, cmd, outputs, r, None))
        for name in runs:
            self._summarise(name, runs[name])

    def _run_once(self, name: str, cmd: list[str], outputs, r: int, env: dict | None) -> dict:
        for out in outputs:
            _remove(out)
        settle()
        log = self.logs / f"{_slug(name)}.{r}.log"
        last = run_measured(cmd, env=env, log=log)
        for out in outputs:
            _remove(out)
        if self.verbose:
            extra = f" (work {last['seconds']:.2f} s)" if "seconds" in last else ""
            print(
                f"  {name} run {r + 1}: {last['wall']:.2f} s{extra}, CPU {last['cpu']:.2f} s, "
                f"peak RSS {last['rss'] / 2**20:.0f} MiB, load {last['load']:.1f}",
                flush=True,
            )
        return last

    def _summarise(self, name: str, runs: list[dict]) -> dict:
        summary = {
            "runs": runs,
            "wall": statistics.median(r["wall"] for r in runs),
            "rss": statistics.median(r["rss"] for r in runs),
            "cpu": statistics.median(r["cpu"] for r in runs),
            "load": statistics.median(r["load"] for r in runs),
        }
        if all("seconds" in r for r in runs):
            summary["seconds"] = statistics.median(r["seconds"] for r in runs)
        self.results[name] = summary
        return summary


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path)
    elif path.exists():
        path.unlink()


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in text)


# --------------------------------------------------------------------------------------
# mergekit
# --------------------------------------------------------------------------------------

MERGEKIT_VERSION = "0.1.5"


def setup_mergekit(venv: Path, torch_version: str) -> None:
    """Build mergekit's own virtualenv: torch first (the local CPU wheel), then mergekit.

    mergekit 0.1.5 asks for ``torch>=2.0.0``; pinning torch with a constraints file keeps
    pip from replacing the CPU wheel with a (5 GB) CUDA build while resolving its other
    requirements (transformers 5, accelerate, peft, datasets, ...).
    """
    py = venv / "bin" / "python"
    if not py.exists():
        subprocess.run([_system_python(), "-m", "venv", str(venv)], check=True)
    constraints = venv / "segmerge-bench-constraints.txt"
    constraints.write_text(f"torch=={torch_version}\n")
    pip = [str(py), "-m", "pip", "install", "-c", str(constraints)]
    subprocess.run([*pip, f"torch=={torch_version}"], check=True)
    subprocess.run([*pip, f"mergekit=={MERGEKIT_VERSION}"], check=True)


def _system_python() -> str:
    return shutil.which("python3") or sys.executable


def mergekit_config(folders: list[Path], path: Path) -> Path:
    lines = ["merge_method: linear", "dtype: float32", "models:"]
    for folder in folders:
        lines += [f"  - model: {folder}", "    parameters:", "      weight: 1.0"]
    path.write_text("\n".join(lines) + "\n")
    return path


def mergekit_versions(venv: Path) -> str:
    code = (
        "import importlib.metadata as m; "
        "print(', '.join(f'{p} {m.version(p)}' for p in ('mergekit', 'torch', 'transformers')))"
    )
    r = subprocess.run([str(venv / "bin" / "python"), "-c", code], capture_output=True, text=True)
    return r.stdout.strip() or "unknown"


# --------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------


def machine_info() -> dict:
    import safetensors
    import torch

    cpu = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        mem = int(Path("/proc/meminfo").read_text().split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        mem = 0
    import segmerge

    return {
        "cores": os.cpu_count(),
        "usable cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "cpu": cpu,
        "memory": f"{mem / 2**30:.0f} GiB",
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch threads": torch.get_num_threads(),
        "safetensors": safetensors.__version__,
        "segmerge": segmerge.__version__,
        "os": platform.platform(),
    }


def mib(n: float) -> str:
    return f"{n / 2**20:,.0f}"


FORMAT_LABELS = {"safetensors": "safetensors", "pth": "pth", "hf": "HF folder"}


def report(results: dict, info: dict, ckpt_bytes: int, counts: list[int], args, mergekit_note: str | None) -> str:
    loads = [r["load"] for r in results.values() if "load" in r]
    lines = ["## segmerge merge speed and memory", ""]
    lines.append("Machine: " + ", ".join(f"{k} {v}" for k, v in info.items()))
    if loads:
        lines[-1] += f"; 1-min load average during the runs {min(loads):.1f}-{max(loads):.1f}"
    lines.append("")
    lines.append(
        f"One checkpoint: {ckpt_bytes / 1e6:.0f} MB = {ckpt_bytes / 2**20:.0f} MiB ({ckpt_bytes / 4 / 1e6:.1f}M fp32 "
        f"values, {len(daformer_mitb5_layout())} tensors). Medians of {args.repeats} alternating rounds "
        f"({args.repeats_many} for more than 3 inputs), each run in a fresh process, page cache warm "
        "(every input read once before the first run; all inputs fit in RAM)."
    )
    lines.append("")
    lines.append(
        "`work s` = the merge itself, timed inside the process after its imports; `process s` = the whole "
        "process, interpreter start and imports included; `CPU s` = user+system time of the process, all "
        "threads. `vs floor` divides by the I/O floor's figure for the same format and number of inputs. "
        "Peak RSS is the child's `ru_maxrss`; `RSS − base` subtracts the matching bare-import "
        "process (`import segmerge` for segmerge, `import torch, safetensors.torch` for the others); "
        "`× ckpt` divides that by one checkpoint."
    )
    lines.append("")
    lines.append(
        "| variant | format | inputs | work s | vs floor | process s | vs floor | CPU s | peak RSS MiB "
        "| RSS − base MiB | × ckpt |"
    )
    lines.append("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    seg_base = results.get("import segmerge")
    plain_base = results.get("import torch")

    def row(label, r, fmt, n, base, floor):
        work = f"{r['seconds']:.2f}" if "seconds" in r else "–"
        vs = f"{r['seconds'] / floor['seconds']:.2f}×" if "seconds" in r and floor and "seconds" in floor else "–"
        vs_process = f"{r['wall'] / floor['wall']:.2f}×" if floor else "–"
        if base is not None:
            delta = r["rss"] - base["rss"]
            rss_delta = f"{mib(delta)} | {delta / ckpt_bytes:.2f}×"
        else:
            rss_delta = "– | –"
        lines.append(
            f"| {label} | {fmt} | {n} | {work} | {vs} | {r['wall']:.2f} | {vs_process} | {r['cpu']:.2f} "
            f"| {mib(r['rss'])} | {rss_delta} |"
        )

    for fmt in args.formats:
        for n in counts:
            rows = [
                ("segmerge layerwise (API, 1 thread)", f"segmerge:layerwise/{fmt}/{n}", seg_base),
                ("segmerge linear (API, 1 thread)", f"segmerge:linear/{fmt}/{n}", seg_base),
                ("segmerge merge (CLI, layerwise)", f"cli/{fmt}/{n}", seg_base),
                (
                    "segmerge layerwise, input hashing off (diagnostic)",
                    f"segmerge:layerwise:nohash/{fmt}/{n}",
                    seg_base,
                ),
                ("I/O floor (read all, write anchor)", f"floor/{fmt}/{n}", plain_base),
                ("naive (load whole, average, save)", f"naive/{fmt}/{n}", plain_base),
            ]
            for label, key, base in rows:
                if key in results:
                    row(label, results[key], FORMAT_LABELS[fmt], n, base, results.get(f"floor/{fmt}/{n}"))
    if "cli-hf/linear" in results:
        row("segmerge merge --method linear (CLI)", results["cli-hf/linear"], "HF folder", 3, seg_base, None)
    if "mergekit" in results:
        row(
            "mergekit-yaml, merge_method linear",
            results["mergekit"],
            "HF folder",
            3,
            results.get("mergekit import"),
            None,
        )
    for name, label in (
        ("import segmerge", "`python -c 'import segmerge'`"),
        ("import torch", "`python -c 'import torch, safetensors.torch'`"),
        ("mergekit import", "`python -c 'import mergekit.merge'` (mergekit venv)"),
    ):
        r = results.get(name)
        if r:
            lines.append(
                f"| bare {label} | – | – | – | – | {r['wall']:.2f} | – | {r['cpu']:.2f} | {mib(r['rss'])} | 0 | – |"
            )
    lines.append("")
    lines.append(
        "Targets (from the issue; the time target is on the whole process, interpreter start and imports "
        "included, as a user waits for it; the work-time ratio is printed beside it):"
    )
    for fmt in args.formats:
        for n in counts:
            floor = results.get(f"floor/{fmt}/{n}")
            for label in ("layerwise", "linear"):
                r = results.get(f"segmerge:{label}/{fmt}/{n}")
                if r and floor:
                    work, whole = r["seconds"] / floor["seconds"], r["wall"] / floor["wall"]
                    ok = "met" if whole <= 1.3 else "MISSED"
                    lines.append(
                        f"- {FORMAT_LABELS[fmt]}, {n} inputs, {label} (API): {whole:.2f}× the I/O floor's whole "
                        f"process (target ≤ 1.3×): {ok}; work time {work:.2f}× the floor's"
                    )
            r = results.get(f"cli/{fmt}/{n}")
            if r and floor:
                whole = r["wall"] / floor["wall"]
                ok = "met" if whole <= 1.3 else "MISSED"
                lines.append(
                    f"- {FORMAT_LABELS[fmt]}, {n} inputs, `segmerge merge` (CLI, layerwise, relatedness check on): "
                    f"{whole:.2f}× the I/O floor's whole process (target ≤ 1.3×): {ok}"
                )
            r = results.get(f"segmerge:layerwise/{fmt}/{n}")
            if r and seg_base:
                x = (r["rss"] - seg_base["rss"]) / ckpt_bytes
                ok = "met" if x <= 1.5 else "MISSED"
                lines.append(
                    f"- {FORMAT_LABELS[fmt]}, {n} inputs: peak RSS − bare import = {x:.2f}× one checkpoint "
                    f"(target ≤ 1.5×): {ok}"
                )
    if mergekit_note:
        lines += ["", mergekit_note]
    return "\n".join(lines)


# --------------------------------------------------------------------------------------


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(sys.argv[2:])
        return
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--workdir",
        type=Path,
        default=Path("/tmp/segmerge-bench"),
        help="where models, outputs and logs go (kept out of the repo) [/tmp/segmerge-bench]",
    )
    p.add_argument("--repeats", type=int, default=3, help="runs per 3-input variant (median reported) [3]")
    p.add_argument("--repeats-many", type=int, default=None, help="runs per many-input variant [--repeats]")
    p.add_argument("--many", type=int, default=10, help="inputs for the memory test [10]")
    p.add_argument("--formats", default="safetensors,pth,hf", help="comma-separated: safetensors,pth,hf (HF folders)")
    p.add_argument(
        "--mergekit-venv",
        type=Path,
        default=None,
        help="a virtualenv with mergekit installed; the mergekit comparison is skipped without it",
    )
    p.add_argument(
        "--setup-mergekit",
        action="store_true",
        help="create the mergekit virtualenv first (at --mergekit-venv, default /tmp/mergekit-venv)",
    )
    p.add_argument("--skip-many", action="store_true", help="skip the many-input runs")
    p.add_argument("--only-many", action="store_true", help="skip the 3-input runs")
    p.add_argument("--markdown", type=Path, default=None, help="also write the table to this file")
    p.add_argument("--quiet", action="store_true", help="do not print each run")
    args = p.parse_args()  # fmt: skip
    args.formats = [f.strip() for f in args.formats.split(",") if f.strip()]
    args.repeats_many = args.repeats_many or args.repeats
    workdir = args.workdir.resolve()
    if workdir == REPO or REPO in workdir.parents:
        raise SystemExit(f"--workdir {workdir} is inside the repository; the models are gigabytes: use /tmp")
    workdir.mkdir(parents=True, exist_ok=True)

    import torch

    if args.setup_mergekit:
        args.mergekit_venv = args.mergekit_venv or Path("/tmp/mergekit-venv")
        setup_mergekit(args.mergekit_venv, torch.__version__.split("+")[0])

    n_many = args.many
    counts = ([] if args.only_many else [3]) + ([] if args.skip_many else [n_many])
    count = max(3, *counts)
    generate(workdir, count)
    ckpt_bytes = model_paths(workdir, 1, "safetensors")[0].stat().st_size

    mergekit_ok = args.mergekit_venv is not None and (args.mergekit_venv / "bin" / "mergekit-yaml").exists()
    if "hf" in args.formats:
        make_hf_folders(workdir, count)
    folders = make_hf_folders(workdir, 3) if mergekit_ok else []  # mergekit merges three

    def inputs_of(fmt: str, n: int) -> list[str]:
        return [str(x) for x in (hf_folders(workdir, n) if fmt == "hf" else model_paths(workdir, n, fmt))]

    print("warming the page cache (one read of every input) ...", flush=True)
    warm_cache(sorted({Path(p) for f in args.formats for n in counts for p in inputs_of(f, n)} | set(folders)))

    info = machine_info()
    runner = Runner(workdir, args.repeats, verbose=not args.quiet)
    py = sys.executable
    me = [py, str(HERE), "--child"]
    out_dir = workdir / "out"
    out_dir.mkdir(exist_ok=True)
    cli = Path(py).parent / "segmerge"
    cli_cmd = [str(cli)] if cli.exists() else [py, "-m", "segmerge"]

    print("bare-import baselines ...", flush=True)
    runner.measure("import segmerge", [py, "-c", "import segmerge"])
    runner.measure("import torch", [py, "-c", "import torch, safetensors.torch"])

    jobs = []
    for fmt in args.formats:
        out = out_dir / {"safetensors": "merged.safetensors", "pth": "merged.pth", "hf": "merged_hf"}[fmt]
        for n in counts:
            inputs = inputs_of(fmt, n)
            many = n > 3
            repeats = args.repeats_many if many else args.repeats
            methods = ("layerwise",) if many else ("layerwise", "linear", "layerwise:nohash")
            for method in methods:
                jobs.append((f"segmerge:{method}/{fmt}/{n}", [*me, f"segmerge:{method}", fmt, str(out), *inputs],
                             [out], repeats))  # fmt: skip
            jobs.append((f"cli/{fmt}/{n}", [*cli_cmd, "merge", *inputs, "-o", str(out), "--overwrite"], [out],
                         repeats))  # fmt: skip
            jobs.append((f"floor/{fmt}/{n}", [*me, "floor", fmt, str(out), *inputs], [out], repeats))
            if not many:  # loading 10 models whole takes 4 GB: left out
                jobs.append((f"naive/{fmt}/{n}", [*me, "naive", fmt, str(out), *inputs], [out], repeats))
    print(f"{len(jobs)} variants, alternating, {max(r for *_, r in jobs)} rounds ...", flush=True)
    runner.alternate(jobs)

    mergekit_note = None
    if args.mergekit_venv is None:
        mergekit_note = "mergekit: skipped (no --mergekit-venv; see benchmarks/README.md)."
        print(mergekit_note)
    elif not mergekit_ok:
        mergekit_note = f"mergekit: skipped ({args.mergekit_venv}/bin/mergekit-yaml not found; try --setup-mergekit)."
        print(mergekit_note)
    else:
        config = mergekit_config(folders, workdir / "mergekit-linear.yml")
        mk_out = out_dir / "mergekit-linear"
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
        print("mergekit linear, 3 HF folders ...", flush=True)
        cmd = [str(args.mergekit_venv / "bin" / "mergekit-yaml"), str(config), str(mk_out), "--no-copy-tokenizer"]
        mk = runner.measure("mergekit", cmd, [mk_out], env=env)
        seg_out = out_dir / "segmerge-linear"
        print("segmerge linear, the same 3 HF folders ...", flush=True)
        seg_hf = runner.measure(
            "cli-hf/linear",
            [*cli_cmd, "merge", *map(str, folders), "--method", "linear", "-o", str(seg_out), "--overwrite"],
            [seg_out],
            env=env,
        )
        mk_import = runner.measure(
            "mergekit import", [str(args.mergekit_venv / "bin" / "python"), "-c", "import mergekit.merge"], env=env
        )
        mergekit_note = (
            f"mergekit ({mergekit_versions(args.mergekit_venv)}), in its own virtualenv {args.mergekit_venv}: "
            f"`mergekit-yaml {config.name} OUT --no-copy-tokenizer` (merge_method linear, weight 1.0 each, "
            "dtype float32) on 3 HF-style folders: config.json is a SegFormer (MiT-B5) config naming the "
            "architecture DAFormerSegmentor, which neither mergekit nor transformers knows, so mergekit infers "
            "the layout from the tensor names; model.safetensors holds the same tensors as the .safetensors "
            f"inputs. Median process time {mk['wall']:.2f} s ({mk['cpu']:.2f} s CPU), peak RSS "
            f"{mib(mk['rss'])} MiB; segmerge's CLI on the same folders: {seg_hf['wall']:.2f} s "
            f"({seg_hf['cpu']:.2f} s CPU), {mib(seg_hf['rss'])} MiB, i.e. mergekit takes "
            f"{mk['wall'] / seg_hf['wall']:.1f}× the time. Bare `import mergekit.merge`: {mk_import['wall']:.2f} s, "
            f"{mib(mk_import['rss'])} MiB."
        )
        print(mergekit_note)

    text = report(runner.results, info, ckpt_bytes, counts, args, mergekit_note)
    print()
    print(text)
    (workdir / "results.json").write_text(json.dumps({"info": info, "results": runner.results}, indent=2))
    if args.markdown:
        args.markdown.write_text(text + "\n")


if __name__ == "__main__":
    main()
