"""Profile one compiled VL-BEiT training step and print its most expensive ops.

    KERAS_BACKEND=jax   python recipes/profile_step.py --preset vlbeit_base --step mim
    KERAS_BACKEND=torch python recipes/profile_step.py --preset vlbeit_base --step mim

Builds the same model and synthetic batch as ``recipes/benchmark.py``, runs
``--warmup`` steps (compilation), then profiles one ``train_on_batch`` step:

- JAX: ``jax.profiler.trace(..., create_perfetto_trace=True)``; the XLA
  kernel events of the trace are summed by kernel kind (the HLO fusion name
  without its ``.N`` suffix, e.g. ``ynn_fusion`` = matrix multiplications
  through XNNPACK/YNNPACK, ``copy_bitcast_fusion`` = layout copies and
  transposes with fused element-wise producers).
- torch: ``torch.profiler`` (CPU activities), the ``key_averages`` table by
  self CPU time.
- TensorFlow: not supported here (use TensorBoard's profiler).

Times are wall time of the profiled step (contended on a shared CPU) and the
share of the summed kernel time.
"""

import argparse
import collections
import gzip
import json
import os
import pathlib
import re
import sys
import tempfile
import time

REPO = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO.parent))


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--preset", default="vlbeit_base")
    parser.add_argument("--step", default="mim", choices=("mim", "mvlm", "vqa"))
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--text-length", type=int, default=40)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--top", type=int, default=20)
    parser.add_argument("--trace-dir", default=None, help="JAX: keep the trace here")
    return parser.parse_args(argv)


def build(args):
    """(model, step function) as in recipes/benchmark.py's worker."""
    import benchmark

    bench_args = benchmark.parse_args([
        "--preset", args.preset, "--step", args.step, "--batch-size", str(args.batch_size),
        "--image-size", str(args.image_size), "--text-length", str(args.text_length),
    ])
    import keras

    import vlbeit_keras

    keras.utils.set_random_seed(0)
    backbone = vlbeit_keras.VLBEiTBackbone.from_preset(
        args.preset, load_weights=False, image_size=args.image_size, max_text_length=args.text_length)
    if args.step in ("mim", "mvlm"):
        from vlbeit_keras.data.visual_tokenizers import RandomProjectionTokenizer

        tokenizer = RandomProjectionTokenizer(backbone.patch_size, bench_args.codebook_size)
        model = vlbeit_keras.VLBEiTPretrainer(backbone, objectives=(args.step,), visual_tokenizer=tokenizer)
    else:
        from vlbeit_keras.tasks.vqa import VLBEiTVQA

        model = VLBEiTVQA(backbone, num_answers=bench_args.num_answers)
    model.compile()
    x, y, _ = benchmark.synthetic_inputs(args.step, args.batch_size, args.image_size, backbone.patch_size,
                                         args.text_length, backbone.vocabulary_size, bench_args.num_answers)
    return lambda: model.train_on_batch(x, y)


_HOST_EVENTS = {"shard_args", "ExecuteReplicated", "TransferToDevice", "TransferFromDevice"}


def jax_kernel_table(trace_dir):
    """{kernel kind: (total µs, count)} from the newest perfetto trace under ``trace_dir``."""
    files = sorted(pathlib.Path(trace_dir).rglob("*.trace.json.gz"), key=os.path.getmtime)
    if not files:
        raise SystemExit(f"No perfetto trace under {trace_dir}.")
    with gzip.open(files[-1]) as fh:
        events = json.load(fh)
    events = events["traceEvents"] if isinstance(events, dict) else events
    totals, counts = collections.Counter(), collections.Counter()
    for event in events:
        name = event.get("name", "")
        # Keep XLA kernels; drop Python frames ($...), runtime/host events (A::B) and dispatch.
        if event.get("ph") != "X" or name.startswith("$") or "::" in name or name in _HOST_EVENTS \
                or name.startswith("PjitFunction"):
            continue
        kind = re.sub(r"\.\d+$", "", name)
        totals[kind] += event.get("dur", 0)
        counts[kind] += 1
    return totals, counts


def main(argv=None):
    args = parse_args(argv)
    backend = os.environ.get("KERAS_BACKEND", "jax")
    step = build(args)
    for _ in range(args.warmup):
        step()
    print(f"{args.preset}, {args.step} step, batch {args.batch_size}, {args.image_size} px, backend {backend}; "
          f"load average {os.getloadavg()[0]:.2f}")
    if backend == "jax":
        import jax

        trace_dir = args.trace_dir or tempfile.mkdtemp(prefix="vlbeit_profile_")
        with jax.profiler.trace(trace_dir, create_perfetto_trace=True):
            start = time.perf_counter()
            step()
            wall = time.perf_counter() - start
        totals, counts = jax_kernel_table(trace_dir)
        total = sum(totals.values())
        print(f"profiled step {wall:.2f} s wall; XLA kernels {total / 1e6:.2f} s (summed over threads)")
        print(f"{'kernel kind':<34}{'ms':>10}{'share':>8}{'count':>7}")
        for kind, micros in totals.most_common(args.top):
            print(f"{kind:<34}{micros / 1e3:>10.1f}{100 * micros / total:>7.1f}%{counts[kind]:>7}")
    elif backend == "torch":
        from torch.profiler import ProfilerActivity
        from torch.profiler import profile

        with profile(activities=[ProfilerActivity.CPU]) as prof:
            start = time.perf_counter()
            step()
            wall = time.perf_counter() - start
        print(f"profiled step {wall:.2f} s wall")
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.top,
                                        max_name_column_width=40))
    else:
        raise SystemExit(f"Backend {backend!r}: use TensorBoard's profiler (keras.callbacks.TensorBoard"
                         "(profile_batch=...)); this script covers jax and torch.")


if __name__ == "__main__":
    main()
