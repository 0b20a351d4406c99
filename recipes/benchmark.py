"""Training-step benchmark: VL-BEiT on each Keras backend vs a PyTorch reference.

    # base preset, MIM step, on all three backends + the Hugging Face BEiT reference
    python recipes/benchmark.py --preset vlbeit_base --step mim --batch-size 8 \
        --image-size 224 --text-length 40 --backends jax,tensorflow,torch --warmup 2 --steps 3
    python recipes/benchmark.py --step mvlm            # image-text (no reference exists)
    python recipes/benchmark.py --step vqa             # VQA fine-tuning step (no reference)
    python recipes/benchmark.py --memory-table         # peak memory per preset / batch / remat

Every measurement runs in a fresh subprocess (one backend per process; clean
peak-memory figures): build the model, make one synthetic batch, run
``--warmup`` training steps (compilation), then time ``--steps`` steps with
``model.train_on_batch`` (the compiled ``fit`` step: jit on JAX, XLA on
TensorFlow when ``--jit auto`` picks it, eager on torch). Printed per row:
mean step time, steps/s, examples/s, the analytic training FLOPs
(:func:`vlbeit_keras.flops.step_flops`), achieved FLOP/s and its share of
the CPU's nominal float32 peak (:func:`vlbeit_keras.flops.cpu_peak_flops`),
peak memory (process peak RSS on CPU, device peak on GPU), and the ratio of
our steps/s to the reference's.

Steps:
    mim   image-only masked image modeling (V-FFN path): the pretrainer with
          the "mim" objective; 40% of patches masked (block count), 8192 visual
          codes, targets from a frozen random-projection tokenizer inside the
          step. Reference: Hugging Face ``transformers``
          ``BeitForMaskedImageModeling`` of the same size (relative position
          bias per layer, layerscale 0.1, q/v biases, mask token), eager
          PyTorch, AdamW + global-norm clipping 3.0 like ours.
    mvlm  image-text masked vision-language modeling (text + image in one
          fused pass; 50% of text, 40% of patches masked). No reference: no
          well-kept library implements a VLMo/VL-BEiT MoME model.
    vqa   VQA fine-tuning step (fused pass, pooler, 3,129-answer classifier,
          soft-score BCE). No reference (same reason).

The reference needs ``transformers`` (``pip install -e .[bench]``); without it
the table says so. The CPU is often shared: the 1-minute load average is
printed next to the numbers.
"""

import argparse
import json
import os
import pathlib
import resource
import statistics
import subprocess
import sys
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

STEPS = ("mim", "mvlm", "vqa")
REFERENCES = {"mim": "transformers BeitForMaskedImageModeling"}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--preset", default="vlbeit_base")
    parser.add_argument("--step", default="mim", choices=STEPS)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--text-length", type=int, default=40)
    parser.add_argument("--codebook-size", type=int, default=8192)
    parser.add_argument("--num-answers", type=int, default=3129)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--backends", default=None,
                        help="comma-separated Keras backends (default: $KERAS_BACKEND or jax)")
    parser.add_argument("--no-reference", action="store_true", help="skip the PyTorch reference")
    parser.add_argument("--remat", action="store_true", help="gradient checkpointing of the MoME blocks")
    parser.add_argument("--dtype-policy", default="float32", help="e.g. mixed_bfloat16")
    parser.add_argument("--jit", default="auto", help="compile(jit_compile=...): auto, true, false")
    parser.add_argument("--memory-table", action="store_true",
                        help="peak memory per preset x batch size x remat (see --presets/--batch-sizes)")
    parser.add_argument("--presets", default="vlbeit_tiny,vlbeit_small,vlbeit_base")
    parser.add_argument("--batch-sizes", default="1,8")
    parser.add_argument("--json", default=None, help="also write the rows to this JSON file")
    parser.add_argument("--worker", choices=("ours", "reference"), default=None, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


# ----------------------------------------------------------------------------- helpers
def peak_memory_mib():
    """(peak MiB, what): device peak on an accelerator, else the process peak RSS."""
    backend = os.environ.get("KERAS_BACKEND", "")
    try:
        if backend == "jax":
            import jax

            device = jax.devices()[0]
            if device.platform != "cpu":
                stats = device.memory_stats() or {}
                if "peak_bytes_in_use" in stats:
                    return stats["peak_bytes_in_use"] / 2**20, f"{device.platform} peak"
        import torch

        if torch.cuda.is_available() and torch.cuda.max_memory_allocated():
            return torch.cuda.max_memory_allocated() / 2**20, "cuda peak"
    except Exception:  # noqa: BLE001 - best effort; fall back to RSS
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "peak RSS"


def masked_positions(rng, batch, n, count):
    """Sorted random positions (batch, count) and the boolean mask (batch, n)."""
    import numpy as np

    positions = np.sort(np.stack([rng.choice(n, count, replace=False) for _ in range(batch)]), axis=1)
    mask = np.zeros((batch, n), bool)
    np.put_along_axis(mask, positions, True, axis=1)
    return positions.astype("int32"), mask


def synthetic_inputs(step, batch, image_size, patch, text_length, vocab, num_answers, seed=0):
    """One batch of the step's layout (float32 images in [-1, 1], fixed-size masks)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    n = (image_size // patch) ** 2
    images = rng.uniform(-1, 1, (batch, image_size, image_size, 3)).astype("float32")
    k = round(0.4 * n)
    positions, mask = masked_positions(rng, batch, n, k)
    image = {"images": images, "patch_mask": mask, "image_mask_positions": positions,
             "image_mask_weights": np.ones((batch, k), "float32")}
    ids = rng.integers(5, vocab, (batch, text_length)).astype("int32")
    ids[:, 0], ids[:, -1] = 2, 3
    text = {"token_ids": ids, "padding_mask": np.ones((batch, text_length), "int32")}
    if step == "mim":
        return {"image": image}, None, k
    if step == "mvlm":
        p = -(-text_length // 2)
        tpos = np.sort(np.stack([rng.choice(np.arange(1, text_length - 1), p, replace=False)
                                 for _ in range(batch)]), axis=1).astype("int32")
        text.update(text_mask_positions=tpos, text_mask_ids=np.take_along_axis(ids, tpos, 1),
                    text_mask_weights=np.ones((batch, p), "float32"))
        return {"image_text": {**text, **image}}, None, k
    y = np.zeros((batch, num_answers), "float32")
    y[np.arange(batch), rng.integers(0, num_answers, batch)] = 1.0
    return {**text, "images": images}, y, k


def _cpu_seconds():
    t = os.times()
    return t.user + t.system


def time_steps(step_fn, warmup, steps):
    """(first-step s, timed step wall s list, timed step CPU s list) after ``warmup`` steps.

    CPU seconds are this process's user + system time (all its threads): on
    a shared machine they are much less distorted by other processes' load
    than wall time.
    """
    t = time.perf_counter()
    step_fn()
    first = time.perf_counter() - t
    for _ in range(max(warmup - 1, 0)):
        step_fn()
    times, cpu = [], []
    for _ in range(steps):
        t, c = time.perf_counter(), _cpu_seconds()
        step_fn()
        times.append(time.perf_counter() - t)
        cpu.append(_cpu_seconds() - c)
    return first, times, cpu


# ----------------------------------------------------------------------------- workers
def worker_ours(args):
    import keras

    import vlbeit_keras
    from vlbeit_keras.flops import step_flops

    keras.utils.set_random_seed(0)
    if args.dtype_policy != "float32":
        keras.config.set_dtype_policy(args.dtype_policy)
    backbone = vlbeit_keras.VLBEiTBackbone.from_preset(
        args.preset, load_weights=False, image_size=args.image_size,
        max_text_length=args.text_length, remat=args.remat,
    )
    if args.step in ("mim", "mvlm"):
        from vlbeit_keras.data.visual_tokenizers import RandomProjectionTokenizer

        tokenizer = RandomProjectionTokenizer(backbone.patch_size, args.codebook_size)
        model = vlbeit_keras.VLBEiTPretrainer(backbone, objectives=(args.step,), visual_tokenizer=tokenizer)
        n = backbone.grid_size[0] * backbone.grid_size[1]
        tokenizer_flops = n * (2 * (backbone.patch_size**2 * 3 + 3) * 32 + 2 * 32 * args.codebook_size)
    else:
        try:
            from vlbeit_keras.tasks.vqa import VLBEiTVQA
        except ImportError as error:
            raise SystemExit(f"The VQA step needs vlbeit_keras.tasks (fine-tuning tasks): {error}")
        model = VLBEiTVQA(backbone, num_answers=args.num_answers)
        tokenizer_flops = 0
    jit = {"auto": "auto", "true": True, "false": False}[args.jit.lower()]
    model.compile(jit_compile=jit)
    x, y, masked = synthetic_inputs(args.step, args.batch_size, args.image_size, backbone.patch_size,
                                    args.text_length, backbone.vocabulary_size, args.num_answers)

    def step():
        if y is None:
            return model.train_on_batch(x, return_dict=True)
        return model.train_on_batch(x, y, return_dict=True)

    first, times, cpu = time_steps(step, args.warmup, args.steps)
    flops = step_flops(backbone, args.step, args.batch_size, text_length=args.text_length,
                       num_image_masked=masked, codebook_size=args.codebook_size,
                       num_answers=args.num_answers, tokenizer_flops_per_image=tokenizer_flops)
    memory, memory_kind = peak_memory_mib()
    return {
        "impl": f"vlbeit_keras ({keras.backend.backend()})",
        "backend": keras.backend.backend(),
        "jit_compile": str(getattr(model, "jit_compile", None)),
        "params": int(model.count_params()),
        "first_step_s": first,
        "step_times_s": times,
        "step_cpu_s": cpu,
        "train_flops": flops["train"],
        "peak_memory_mib": memory,
        "memory_kind": memory_kind,
        "load_average_1min": os.getloadavg()[0],
    }


def worker_reference(args):
    """Hugging Face BEiT MIM of the same shape, eager PyTorch, AdamW + clipping."""
    import numpy as np
    import torch

    from vlbeit_keras.flops import step_flops
    from vlbeit_keras.models.presets import BACKBONE_PRESETS

    try:
        from transformers import BeitConfig
        from transformers import BeitForMaskedImageModeling
    except ImportError as error:
        raise SystemExit(f"transformers is not installed (pip install -e .[bench]): {error}")
    cfg = dict(BACKBONE_PRESETS[args.preset]["config"])
    cfg.update(image_size=args.image_size, max_text_length=args.text_length)
    torch.manual_seed(0)
    config = BeitConfig(
        vocab_size=args.codebook_size, hidden_size=cfg["hidden_dim"],
        num_hidden_layers=cfg["num_layers"], num_attention_heads=cfg["num_heads"],
        intermediate_size=cfg["intermediate_dim"], hidden_act="gelu", hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0, image_size=args.image_size, patch_size=cfg["patch_size"],
        use_mask_token=True, use_absolute_position_embeddings=False,
        use_relative_position_bias=True, use_shared_relative_position_bias=False,
        layer_scale_init_value=0.1, drop_path_rate=0.0, use_mean_pooling=False, layer_norm_eps=1e-6,
    )
    model = BeitForMaskedImageModeling(config)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.98), eps=1e-6,
                                  weight_decay=0.05)
    x, _, masked = synthetic_inputs("mim", args.batch_size, args.image_size, cfg["patch_size"],
                                    args.text_length, cfg["vocabulary_size"], args.num_answers)
    image = x["image"]
    pixels = torch.from_numpy(np.ascontiguousarray(image["images"].transpose(0, 3, 1, 2)))
    bool_masked_pos = torch.from_numpy(image["patch_mask"])
    labels = torch.randint(0, args.codebook_size, (int(bool_masked_pos.sum()),))

    def step():
        optimizer.zero_grad(set_to_none=True)
        loss = model(pixel_values=pixels, bool_masked_pos=bool_masked_pos, labels=labels).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 3.0)
        optimizer.step()
        return float(loss)

    first, times, cpu = time_steps(step, args.warmup, args.steps)
    flops = step_flops(cfg, "mim", args.batch_size, num_image_masked=masked,
                       codebook_size=args.codebook_size, head_positions="all")
    memory, memory_kind = peak_memory_mib()
    import transformers

    return {
        "impl": f"transformers {transformers.__version__} BEiT (torch {torch.__version__.split('+')[0]}, "
                f"{config._attn_implementation})",
        "backend": "torch",
        "jit_compile": "eager",
        "params": sum(p.numel() for p in model.parameters()),
        "first_step_s": first,
        "step_times_s": times,
        "step_cpu_s": cpu,
        "train_flops": flops["train"],
        "peak_memory_mib": memory,
        "memory_kind": memory_kind,
        "load_average_1min": os.getloadavg()[0],
    }


# ----------------------------------------------------------------------------- driver
def _worker_argv(args, kind):
    argv = [sys.executable, str(pathlib.Path(__file__).resolve()), "--worker", kind,
            "--preset", args.preset, "--step", args.step, "--batch-size", str(args.batch_size),
            "--image-size", str(args.image_size), "--text-length", str(args.text_length),
            "--codebook-size", str(args.codebook_size), "--num-answers", str(args.num_answers),
            "--warmup", str(args.warmup), "--steps", str(args.steps),
            "--dtype-policy", args.dtype_policy, "--jit", args.jit]
    return argv + (["--remat"] if args.remat else [])


def run_worker(args, kind, backend):
    """Run one measurement in a fresh process; returns its result dict (or an error row)."""
    env = dict(os.environ, KERAS_BACKEND=backend, PYTHONPATH=str(REPO) + os.pathsep
               + os.environ.get("PYTHONPATH", ""), TF_CPP_MIN_LOG_LEVEL="3")
    proc = subprocess.run(_worker_argv(args, kind), env=env, capture_output=True, text=True)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["?"]
        return {"impl": f"{kind} ({backend})", "error": tail[0][:200]}
    return json.loads(lines[-1][len("RESULT "):])


def summarize(row, peak, cores=None):
    """Add means and rates to a worker row.

    ``peak_fraction`` = achieved FLOP/s (wall time) / the CPU's float32 peak;
    ``cpu_peak_fraction`` = FLOPs / (CPU seconds x one core's peak), i.e. the
    share of the peak of the core-seconds the step actually got (much less
    distorted by other processes on a shared machine).
    """
    if "error" in row:
        return row
    times = row["step_times_s"]
    mean = statistics.fmean(times)
    row = dict(row)
    row.update(step_s=mean, step_s_median=statistics.median(times), steps_per_s=1.0 / mean,
               cpu_s=statistics.fmean(row["step_cpu_s"]))
    row["examples_per_s"] = row["steps_per_s"] * row.get("batch_size", 0)
    row["flops_per_s"] = row["train_flops"] / mean
    row["peak_fraction"] = row["flops_per_s"] / peak if peak else None
    row["cpu_peak_fraction"] = (row["train_flops"] / row["cpu_s"] / (peak / cores)
                                if peak and cores and row["cpu_s"] > 0 else None)
    return row


def print_table(rows, args, peak_info, reference):
    load = os.getloadavg()
    print(f"\npreset {args.preset}, step {args.step}, batch {args.batch_size}, image {args.image_size} px, "
          f"text {args.text_length}, {args.dtype_policy}{', remat' if args.remat else ''}; "
          f"{args.warmup} warm-up + {args.steps} timed steps")
    print(f"CPU: {peak_info['model']}")
    print(f"CPU peak (float32): {peak_info['peak'] / 1e9:.1f} GFLOP/s = {peak_info['how']}; "
          f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    header = (f"{'implementation':<52}{'step s':>8}{'CPU s':>7}{'steps/s':>9}{'ex/s':>7}"
              f"{'GFLOP/step':>11}{'GFLOP/s':>9}{'of peak':>8}{'CPU-s eff':>10}{'peak MiB':>9}{'vs ref':>7}"
              f"{'CPU vs ref':>11}")
    print(header)
    print("-" * len(header))
    ref = next((r for r in rows if r.get("kind") == "reference" and "error" not in r), None)
    for row in rows:
        if "error" in row:
            print(f"{row['impl']:<52}  failed: {row['error']}")
            continue
        ratio = f"{row['steps_per_s'] / ref['steps_per_s']:.2f}" if ref else "-"
        cpu_ratio = f"{ref['cpu_s'] / row['cpu_s']:.2f}" if ref else "-"
        print(f"{row['impl'][:51]:<52}{row['step_s']:>8.2f}{row['cpu_s']:>7.1f}{row['steps_per_s']:>9.3f}"
              f"{row['examples_per_s']:>7.2f}{row['train_flops'] / 1e9:>11.1f}"
              f"{row['flops_per_s'] / 1e9:>9.1f}{100 * row['peak_fraction']:>7.1f}%"
              f"{100 * (row.get('cpu_peak_fraction') or 0):>9.1f}%"
              f"{row['peak_memory_mib']:>9.0f}{ratio:>7}{cpu_ratio:>11}")
    if reference is None:
        print(f"reference: none for the {args.step!r} step (no well-kept PyTorch library implements "
              "VL-BEiT/VLMo's MoME model)")
    elif ref is None:
        print(f"reference: {reference} not measured ({'skipped' if args.no_reference else 'failed'})")
    print("vs ref = our steps/s / reference steps/s (same shape, same step, same run); CPU vs ref = "
          "reference CPU s / our CPU s per step (less sensitive to other load); GFLOP/s and "
          "of peak use wall time; CPU-s eff = FLOPs / (CPU s x one core's peak); first-step (compile) and per-step times are in --json output.")


def memory_table(args):
    """Peak memory of one MIM training step per preset x batch size, remat off/on."""
    from vlbeit_keras.models.presets import BACKBONE_PRESETS

    backend = (args.backends or os.environ.get("KERAS_BACKEND") or "jax").split(",")[0]
    rows = []
    print(f"peak memory (MiB) of a {args.step} training step, backend {backend}, "
          f"{args.warmup} warm-up + {args.steps} steps; load average {os.getloadavg()[0]:.2f}")
    print(f"{'preset':<16}{'image':>6}{'batch':>6}{'remat off':>11}{'remat on':>10}{'saved':>8}")
    for preset in args.presets.split(","):
        cfg = BACKBONE_PRESETS[preset]["config"]
        size = cfg["image_size"] if preset != "vlbeit_base" else args.image_size
        for batch in (int(b) for b in args.batch_sizes.split(",")):
            pair = {}
            for remat in (False, True):
                sub = argparse.Namespace(**{**vars(args), "preset": preset, "batch_size": batch,
                                            "image_size": size, "remat": remat,
                                            "text_length": min(args.text_length, cfg["max_text_length"])})
                row = run_worker(sub, "ours", backend)
                pair[remat] = row.get("peak_memory_mib")
                rows.append({"preset": preset, "batch_size": batch, "image_size": size, "remat": remat,
                             **row})
            off, on = pair[False], pair[True]
            saved = f"{100 * (off - on) / off:.0f}%" if off and on else "-"
            fmt = lambda v: f"{v:.0f}" if v else "failed"  # noqa: E731
            print(f"{preset:<16}{size:>6}{batch:>6}{fmt(off):>11}{fmt(on):>10}{saved:>8}", flush=True)
    return rows


def main(argv=None):
    args = parse_args(argv)
    if args.worker:
        result = (worker_ours if args.worker == "ours" else worker_reference)(args)
        result["batch_size"] = args.batch_size
        print("RESULT " + json.dumps(result), flush=True)
        return result
    from vlbeit_keras.flops import cpu_peak_flops

    if args.memory_table:
        rows = memory_table(args)
    else:
        peak = cpu_peak_flops()
        backends = (args.backends or os.environ.get("KERAS_BACKEND") or "jax").split(",")
        reference = REFERENCES.get(args.step)
        rows = []
        # The reference is measured in the same run, between our backends.
        plan = [("ours", b) for b in backends]
        if reference and not args.no_reference:
            plan.insert(min(1, len(plan)), ("reference", "torch"))
        for kind, backend in plan:
            print(f"measuring {kind} ({backend}) ...", flush=True)
            row = run_worker(args, kind, backend)
            row["kind"] = kind
            rows.append(summarize(row, peak["peak"], peak["cores"]))
        print_table(rows, args, peak, reference)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)
    return rows


if __name__ == "__main__":
    main()
