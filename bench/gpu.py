"""On an accelerator: peak memory, tokens/s and MFU of LoRA training steps, beside the planner and --simulate.

A Qwen2.5-7B-shaped model with random weights is built from its shape (nothing is downloaded),
saved once to a temporary folder (/dev/shm when there is one), and loaded through fathom's own path
(``fathom.model.load``) for each variant; each variant trains one warm-up step and ``--steps``
measured optimizer steps per length with fathom's default memory options and loss. Per row it
prints the measured peak of allocated and reserved GPU memory, the planner's estimate of the same
tensors (and its total with the overhead term), the ``fathom plan --simulate`` peak when given,
tokens/s, the model FLOPs utilization (MFU: forward and backward through the frozen base, no
recompute) and the hardware FLOPs utilization (HFU: the recompute of the checkpointed layers counted
too); the CUDA context (device memory that no tensor holds) is measured once at the start. Each
row is also appended to ``--out`` as one JSON line, so a run cut short keeps what it measured.

A variant is a quantization (none, 8bit, 4bit) with flags: +offload (train.offload_activations),
+liger (Liger's fused loss; else fathom's chunked loss, as the simulation runs), +packed (rows packed
by fathom's packer from a real corpus's document lengths: the maritime corpus in ../shared, or
``--cache``, a fathom token cache; else whole rows of one document), +mask (transformers' SDPA with
the packed row's T x T block mask, the path before fathom's own; else ``attn_implementation: auto``:
flash-attn, torch's varlen, per-document SDPA), +auto (train.memory auto: the fastest activation
setup the planner fits on this device, per length; else every layer checkpointed, as before).

Run on a GPU machine:
    python bench/gpu.py --runs "none:4096,16384,32768;none+offload:32768,65536;4bit+offload:131072"
    python bench/gpu.py --runs "none:4096;none+packed:4096;none+packed+mask:4096;none+auto:4096,32768"
                        [--simulated none=none.json --simulated none+offload=none_offload.json ...]
    (each JSON: fathom plan --config configs/qwen2.5-7b-maritime-32k.yaml --simulate --json
     [model.load_in_4bit=true] [train.offload_activations=true], made on any machine beforehand)
Smoke test anywhere:   python bench/gpu.py --shape tiny --runs "none:256;none+packed:256" --steps 1
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from _common import config_of_shape, corpus_lengths, rows_from_lengths

from fathom.config import LoraConfig, ModelConfig, TrainConfig
from fathom.estimate import (
    GIB,
    HARDWARE,
    KNOWN_SHAPES,
    MemorySetup,
    ModelShape,
    Options,
    choose_memory,
    estimate_memory,
    flops_per_token,
    memory_setup,
    with_memory,
)
from fathom.model.allocator import prefer_expandable_segments
from fathom.model.load import lean_norms, load_model, set_checkpointing, tile_mlps
from fathom.model.lora import apply_lora
from fathom.model.loss import causal_lm_loss_sum, resolve_loss_implementation
from fathom.train.optim import build_optimizer

TINY = ModelShape(2, 128, 256, 4, 2, 32, 1024, False, True)
QUANT_BITS = {"none": 16, "8bit": 8, "4bit": 4}
FLAGS = ("offload", "liger", "packed", "mask", "auto")


@dataclass(frozen=True)
class Variant:
    """One way of building the step, written ``QUANT[+FLAG...]``, e.g. ``4bit+offload``."""

    name: str
    quant: str
    offload: bool
    liger: bool
    packed: bool
    mask: bool = False
    auto: bool = False

    @classmethod
    def parse(cls, text: str) -> Variant:
        quant, *flags = text.split("+")
        if quant not in QUANT_BITS or any(flag not in FLAGS for flag in flags):
            raise SystemExit(
                f"--runs: {text!r} is not QUANT[+FLAG...] with QUANT in {list(QUANT_BITS)}, FLAG in {FLAGS}"
            )
        on = {flag: flag in flags for flag in FLAGS}
        return cls(text, quant, on["offload"], on["liger"], on["packed"], on["mask"], on["auto"])

    def options(self) -> Options:
        """The planner's view of this variant (the TrainConfig defaults otherwise, as the step uses)."""
        return Options(
            quant_bits=QUANT_BITS[self.quant],
            offload_activations=self.offload,
            loss="liger" if self.liger else "chunked",
            attention="sdpa" if self.mask else "flash",
        )

    def memory(self, shape: ModelShape, seq_len: int, device: torch.device) -> MemorySetup:
        """The activation setup at ``seq_len``: the planner's fastest that fits this device (+auto), or every
        layer checkpointed (with the offload as the variant says)."""
        from fathom.config import FathomConfig
        from fathom.train.memory import device_memory_gib

        gpu, limit = device.type != "cpu", device_memory_gib(device) * GIB
        if not self.auto:
            return memory_setup(shape, self.options(), seq_len, limit, gpu, 1, self.offload, chosen=False)
        config = FathomConfig()
        config.train.offload_activations = True if self.offload else None
        return choose_memory(shape, self.options(), seq_len, limit, gpu, config)


def parse_runs(text: str) -> list[tuple[Variant, list[int]]]:
    """``"none:4096,32768;4bit+offload:131072"`` -> [(Variant, [lengths]), ...], in the order given."""
    runs = []
    for item in filter(None, (part.strip() for part in text.split(";"))):
        name, _, lengths = item.partition(":")
        runs.append((Variant.parse(name), [int(n) for n in lengths.split(",")]))
    return runs


def build_random_model(shape: ModelShape, folder: Path) -> None:
    from tokenizers import Tokenizer, models
    from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerFast

    config = config_of_shape(shape, rope_theta=1_000_000.0)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    model.save_pretrained(folder)
    del model
    vocab = {f"t{i}": i for i in range(shape.vocab - 1)} | {"<|endoftext|>": shape.vocab - 1}
    tok = PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer(models.WordLevel(vocab, unk_token="t0")), eos_token="<|endoftext|>"
    )
    tok.save_pretrained(folder)
    AutoTokenizer.from_pretrained(folder)  # the folder must load as a whole


def batches(vocab: int, seq_len: int, lengths: list[int], device: torch.device):
    """Endless micro-batches of one row on ``device``: packed from documents of ``lengths`` tokens by
    fathom's own packer, or (``lengths`` empty) one document filling the row (position ids 0..T-1)."""
    for batch in rows_from_lengths(lengths, vocab, seq_len, seed=seq_len):
        yield {k: v.to(device) for k, v in batch.items()}


def cuda_context_gib() -> float:
    """Device memory in use that PyTorch's allocator does not hold: the CUDA context and libraries."""
    torch.zeros(1, device="cuda")
    free, total = torch.cuda.mem_get_info()
    return (total - free - torch.cuda.memory_reserved()) / GIB


def time_steps(model, optimizer, batch_iter, steps: int, loss_impl: str, cuda: bool) -> tuple[list[float], float]:
    """One warm-up optimizer step (AdamW's state appears at its end), then ``steps`` timed ones.

    Returns the timed steps' seconds and the warm-up step's loss: LoRA starts as the identity and
    the first batch depends only on the length, so variants that compute the same function (with
    and without offload, Liger or chunked loss) must agree on it.
    """
    times, first_loss = [], float("nan")
    for step in range(steps + 1):
        batch = next(batch_iter)
        if cuda:
            torch.cuda.synchronize()
        start = time.perf_counter()
        loss_sum, n = causal_lm_loss_sum(model, batch, TrainConfig().loss_chunk_size, loss_impl)
        loss = loss_sum / n
        loss.backward()
        if step == 0:
            first_loss = loss.item()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if cuda:
            torch.cuda.synchronize()
        if step > 0:
            times.append(time.perf_counter() - start)
    return times, first_loss


def restart(model: torch.nn.Module, optimizer: torch.optim.Optimizer, fresh: dict[str, torch.Tensor]) -> None:
    """Every length starts from the fresh adapter with no AdamW state, so its warm-up loss can be
    compared across variants and its peak includes AdamW's state being created, as a run's first step."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name in fresh:
                p.copy_(fresh[name])
    optimizer.state.clear()


def run_variant(folder: Path, shape: ModelShape, variant: Variant, lengths: list[int], args, simulated: dict):
    """Yield one row per length for ``variant``, the step built as ``fathom train`` builds it."""
    train = TrainConfig(offload_activations=variant.offload)
    cfg = ModelConfig(
        name_or_path=str(folder),
        load_in_4bit=variant.quant == "4bit",
        load_in_8bit=variant.quant == "8bit",
        attn_implementation="sdpa" if variant.mask else "auto",
        gradient_checkpointing=True,
    )
    loaded = load_model(cfg, offload_activations=train.offload_activations)
    model = apply_lora(loaded.model, LoraConfig(), seed=0)
    tile_mlps(model, train.mlp_tile_tokens)
    if train.lean_norms:
        lean_norms(model)
    optimizer = build_optimizer(model, train)
    loss_impl = resolve_loss_implementation("liger" if variant.liger else "chunked", loaded.device)
    cuda = loaded.device.type == "cuda"
    fresh = {name: p.detach().clone() for name, p in model.named_parameters() if p.requires_grad}
    for seq_len in lengths:
        row = {"variant": variant.name, "seq_len": seq_len}
        restart(model, optimizer, fresh)
        setup = variant.memory(shape, seq_len, loaded.device)
        set_checkpointing(model, setup.checkpoint_every, setup.offload and cuda)
        if cuda:
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
        try:
            times, first_loss = time_steps(
                model,
                optimizer,
                batches(shape.vocab, seq_len, args.lengths if variant.packed else [], loaded.device),
                args.steps,
                loss_impl,
                cuda,
            )
        except torch.cuda.OutOfMemoryError:
            optimizer.zero_grad(set_to_none=True)
            yield row | {"error": "out of memory"}
            continue
        options = with_memory(variant.options(), setup.checkpoint_every, setup.offload)
        estimate = estimate_memory(shape, options, seq_len, gpu_overhead=False)
        tokens_per_s = seq_len / (sum(times) / len(times))
        peak_flops = HARDWARE[args.hardware].bf16_tflops * 1e12
        mfu = tokens_per_s * flops_per_token(shape, seq_len, 0.0) / peak_flops
        hfu = tokens_per_s * flops_per_token(shape, seq_len, setup.recomputed_layers / shape.num_layers) / peak_flops
        yield row | {
            "peak_gib": round(torch.cuda.max_memory_allocated() / GIB, 2) if cuda else None,
            "reserved_gib": round(torch.cuda.max_memory_reserved() / GIB, 2) if cuda else None,
            "simulated_gib": simulated.get((variant.name, seq_len)),
            "planner_tensors_gib": round(estimate.total / GIB, 2),
            "planner_total_gib": round(estimate_memory(shape, options, seq_len).total / GIB, 2),
            "tokens_per_s": round(tokens_per_s, 1),
            "mfu": float(f"{mfu:.4g}"),
            "hfu": float(f"{hfu:.4g}"),
            "memory": setup.short(),
            "first_loss": round(first_loss, 5),
            "loss": loss_impl,
            "attention": loaded.attn_implementation,
        }
    del model, loaded, optimizer
    gc.collect()
    if cuda:
        torch.cuda.empty_cache()


def format_row(row: dict) -> str:
    head = f"{row['variant']:>18} {row['seq_len']:>7}"
    if "error" in row:
        return f"{head}  {row['error']}"
    gib = lambda v: f"{v:6.2f}" if v is not None else "     -"  # noqa: E731
    return (
        f"{head}  peak {gib(row['peak_gib'])}  reserved {gib(row['reserved_gib'])}  "
        f"simulated {gib(row['simulated_gib'])}  planner {gib(row['planner_tensors_gib'])} "
        f"(+overhead {gib(row['planner_total_gib'])}) GiB  {row['tokens_per_s']:8.1f} tok/s  MFU {row['mfu']:.1%}  "
        f"HFU {row['hfu']:.1%}  loss {row['first_loss']:.5f}  {row['attention']}, {row['memory']}"
    )


def memory_scratch(shape: ModelShape) -> str | None:
    """/dev/shm when it can hold the bf16 weights twice over (loading is then not disk-bound), else
    the default temporary folder."""
    import shutil

    needed = 4 * shape.parameters
    if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) and shutil.disk_usage("/dev/shm").free > needed:
        return "/dev/shm"
    return None


def read_simulated(items: list[str]) -> dict:
    """``VARIANT=FILE`` pairs of ``fathom plan --simulate --json`` output -> {(variant, seq_len): GiB}."""
    simulated = {}
    for item in items:
        name, _, path = item.partition("=")
        for phase in json.loads(Path(path).read_text())["phases"]:
            simulated[(name, phase["max_seq_length"])] = phase.get("simulated_peak_gib")
    return simulated


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", default="Qwen/Qwen2.5-7B", help="a model of fathom.estimate.KNOWN_SHAPES, or tiny")
    parser.add_argument(
        "--runs",
        default="none:4096,16384,32768;none+offload:32768,65536;4bit+offload:65536,131072",
        help="VARIANT:LENGTH,...;... in the order to run (see the module docstring)",
    )
    parser.add_argument("--steps", type=int, default=2, help="measured optimizer steps per length, after one warm-up")
    parser.add_argument("--hardware", default="h200-141gb", help="peak FLOPs for the MFU (fathom.estimate.HARDWARE)")
    parser.add_argument(
        "--simulated",
        action="append",
        default=[],
        metavar="VARIANT=FILE",
        help="fathom plan --simulate --json output for that variant, made beforehand on any machine",
    )
    parser.add_argument("--out", type=Path, help="append each row here as one JSON line")
    parser.add_argument("--cache", type=Path, help="+packed: a fathom token cache whose document lengths to pack")
    args = parser.parse_args()
    args.lengths, source = corpus_lengths(args.cache)
    prefer_expandable_segments()  # as fathom's CLI does, before CUDA is touched
    runs = parse_runs(args.runs)
    simulated = read_simulated(args.simulated)
    shape = TINY if args.shape == "tiny" else KNOWN_SHAPES[args.shape]
    cuda = torch.cuda.is_available()
    header = {
        "benchmark": "gpu",
        "shape": args.shape,
        "torch": torch.__version__,
        "device": torch.cuda.get_device_name(0) if cuda else "cpu",
        "alloc_conf": os.environ.get("PYTORCH_CUDA_ALLOC_CONF", ""),
        "cuda_context_gib": round(cuda_context_gib(), 2) if cuda else None,
        "packed_from": source,
    }
    print(json.dumps(header), flush=True)
    rows = []
    scratch = memory_scratch(shape)
    with tempfile.TemporaryDirectory(prefix="fathom-bench-gpu-", dir=scratch) as tmp:
        build_random_model(shape, Path(tmp))
        for variant, lengths in runs:
            for row in run_variant(Path(tmp), shape, variant, lengths, args, simulated):
                rows.append(row)
                print(format_row(row), flush=True)
                if args.out:
                    with args.out.open("a") as f:
                        f.write(json.dumps(header | row) + "\n")
    print(json.dumps(header | {"rows": rows}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
