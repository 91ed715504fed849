"""On an accelerator: peak memory, tokens/s and MFU of LoRA training steps, beside the planner's estimate.

A Qwen2.5-7B-shaped model with random weights is built from its shape (nothing is downloaded),
saved once to a temporary folder, and loaded through fathom's own path (``fathom.model.load``) in
bf16 and with a 4-bit NF4 base; each variant trains a few steps at 4K, 16K and 32K tokens with
fathom's loss and document-masked packed rows. For each it prints the measured peak GPU memory,
the planner's estimate for the same options, tokens/s and the model FLOPs utilization.

Run on a GPU machine:  python bench/gpu.py [--lengths 4096,16384,32768] [--quant none,4bit]
                       [--simulated none=bf16.json --simulated 4bit=4bit.json]
                       (the JSON: fathom plan --config configs/qwen2.5-7b-maritime-32k.yaml --simulate --json,
                        made on any machine beforehand, so no device time goes to the simulation)
Smoke test anywhere:   python bench/gpu.py --shape tiny --lengths 256 --steps 1
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

from fathom.config import LoraConfig, ModelConfig, TrainConfig
from fathom.data.loader import PhaseLoader
from fathom.estimate import HARDWARE, KNOWN_SHAPES, ModelShape, Options, estimate_memory, flops_per_token
from fathom.model.load import lean_norms, load_model, tile_mlps
from fathom.model.lora import apply_lora
from fathom.model.loss import causal_lm_loss_sum, resolve_loss_implementation
from fathom.train.optim import build_optimizer

TINY = ModelShape(2, 128, 256, 4, 2, 32, 1024, False, True)


def build_random_model(shape: ModelShape, folder: Path) -> None:
    from tokenizers import Tokenizer, models
    from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerFast, Qwen2Config

    config = Qwen2Config(
        vocab_size=shape.vocab,
        hidden_size=shape.hidden,
        intermediate_size=shape.intermediate,
        num_hidden_layers=shape.num_layers,
        num_attention_heads=shape.num_heads,
        num_key_value_heads=shape.num_kv_heads,
        max_position_embeddings=32768,
        rope_theta=1_000_000.0,
        tie_word_embeddings=shape.tied_embeddings,
    )
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


def run_variant(
    folder: Path, shape: ModelShape, quant: str, lengths: list[int], steps: int, hw_key: str, simulated: dict
) -> list[dict]:
    """Optimizer steps built as ``fathom train`` builds them (the default memory options: lean LoRA,
    tiled MLPs, lean norms, chunked or Liger loss, AdamW), measured beside the planner and ``--simulate``."""
    cfg = ModelConfig(name_or_path=str(folder), load_in_4bit=quant == "4bit", load_in_8bit=quant == "8bit")
    train = TrainConfig()
    loaded = load_model(cfg, offload_activations=train.offload_activations)
    model = apply_lora(loaded.model, LoraConfig(r=16, alpha=32, dropout=0.05), seed=0)
    tile_mlps(model, train.mlp_tile_tokens)
    if train.lean_norms:
        lean_norms(model)
    optimizer = build_optimizer(model, train)
    loss_impl = resolve_loss_implementation("auto", loaded.device)
    cuda = loaded.device.type == "cuda"
    rows = []
    for seq_len in lengths:
        generator = torch.Generator().manual_seed(seq_len)
        docs = [
            torch.randint(1, shape.vocab - 1, (int(n),), generator=generator).numpy().astype("int32")
            for n in torch.randint(seq_len // 8, seq_len, (32,), generator=generator)
        ]
        loader = PhaseLoader(docs, seq_len, seed=0, phase_index=0)
        times = []
        if cuda:
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
        try:
            for step in range(steps + 1):
                batch = {k: v.to(loaded.device) for k, v in loader.next_micro_batch().items()}
                if cuda:
                    torch.cuda.synchronize()
                start = time.perf_counter()
                loss_sum, n = causal_lm_loss_sum(model, batch, train.loss_chunk_size, loss_impl)
                (loss_sum / n).backward()
                optimizer.step()  # the second step on holds AdamW's state, as training does
                optimizer.zero_grad(set_to_none=True)
                if cuda:
                    torch.cuda.synchronize()
                if step > 0:
                    times.append(time.perf_counter() - start)
        except torch.cuda.OutOfMemoryError:
            rows.append({"quant": quant, "seq_len": seq_len, "error": "out of memory"})
            continue
        peak = torch.cuda.max_memory_allocated() / 2**30 if cuda else None
        opts = Options(quant_bits={"none": 16, "8bit": 8, "4bit": 4}[quant], loss="chunked")
        estimate = estimate_memory(shape, opts, seq_len).total / 2**30
        sim = simulated.get((quant, seq_len))
        tokens_per_s = seq_len / (sum(times) / len(times))
        mfu = tokens_per_s * flops_per_token(shape, seq_len, True) / (HARDWARE[hw_key].bf16_tflops * 1e12)
        rows.append(
            {
                "quant": quant,
                "seq_len": seq_len,
                "peak_gib": peak and round(peak, 2),
                "planner_gib": round(estimate, 2),
                "simulated_gib": sim,
                "tokens_per_s": round(tokens_per_s, 1),
                "mfu": round(mfu, 4),
                "loss": loss_impl,
            }
        )
        measured = f"{peak:6.2f} GiB" if peak is not None else "  (no GPU)"
        simulated_text = f"{sim:6.2f} GiB" if sim is not None else "     -    "
        print(
            f"{quant:>5} {seq_len:>6}  peak {measured}  simulated {simulated_text}  planner {estimate:6.2f} GiB  "
            f"{tokens_per_s:8.1f} tok/s  MFU {mfu:.1%}",
            flush=True,
        )
    del model, loaded
    if cuda:
        torch.cuda.empty_cache()
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", default="Qwen/Qwen2.5-7B", help="a model of fathom.estimate.KNOWN_SHAPES, or tiny")
    parser.add_argument("--lengths", default="4096,16384,32768")
    parser.add_argument("--quant", default="none,4bit")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--hardware", default="h200-141gb", help="peak FLOPs for the MFU (fathom.estimate.HARDWARE)")
    parser.add_argument(
        "--simulated",
        action="append",
        default=[],
        metavar="QUANT=FILE",
        help="fathom plan --simulate --json output for that quantization (none or 4bit), made beforehand on any "
        "machine, e.g. none=sim.json; its peaks are printed beside the measured ones",
    )
    args = parser.parse_args()
    simulated = {}
    for item in args.simulated:
        quant, _, path = item.partition("=")
        for phase in json.loads(Path(path).read_text())["phases"]:
            simulated[(quant, phase["max_seq_length"])] = phase.get("simulated_peak_gib")
    shape = TINY if args.shape == "tiny" else KNOWN_SHAPES[args.shape]
    lengths = [int(x) for x in args.lengths.split(",")]
    rows = []
    with tempfile.TemporaryDirectory(prefix="fathom-bench-gpu-") as tmp:
        build_random_model(shape, Path(tmp))
        for quant in args.quant.split(","):
            rows += run_variant(Path(tmp), shape, quant, lengths, args.steps, args.hardware, simulated)
    print(
        json.dumps(
            {
                "benchmark": "gpu",
                "shape": args.shape,
                "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu",
                "rows": rows,
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
