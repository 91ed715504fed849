"""Where Phase 2 moves a LoRA adapter: how far, and how much along the way Phase 1 went.

A LoRA module adds ``dW = (alpha / r) * B @ A`` to its frozen weight. Phase 1 starts from ``B = 0``, so
its final adapter's ``dW`` (all modules flattened into one vector) *is* the direction Phase 1 moved
the model. Phase 2 continues from it; comparing its final adapter with Phase 1's says

- ``|dW2 - dW1|``: how far Phase 2 moved the model (in weight space, the product, not A and B, so two
  runs that factor one update differently read the same), and
- ``cos(dW2 - dW1, dW1)``: how much of Phase 2's move goes on along Phase 1's direction, which is
  what AdamW moments carried over from Phase 1 would do (``sft.optimizer_state: continue``).

    python bench/adapter_motion.py RUN_FOLDER [RUN_FOLDER ...]
        # each a finished run: its final_*_model (Phase 1's last) and final_*_instruct_model
    python bench/adapter_motion.py --phase1 P1_ADAPTER --phase2 P2_ADAPTER [--phase2 ...]
        # Phase 2 trained as a separate run from P1_ADAPTER (sft.init_adapter)

Only LoRA pairs are compared: modules trained whole (``lora.train_embeddings``, ``lora.train_norms``,
saved as PEFT's ``modules_to_save``) are left out, for Phase 1's move there needs the base weights.
Reads safetensors only; CPU, a second or two for SmolLM2-sized adapters. Written by hand because
PEFT has no comparison of two adapters' products (its ``get_delta_weight`` needs the model loaded).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from safetensors.torch import load_file


def adapter_delta(folder: Path) -> dict[str, torch.Tensor]:
    """{module name: dW (out_features x in_features), float32} for every LoRA pair in a PEFT adapter folder."""
    if not (folder / "adapter_config.json").is_file() or not (folder / "adapter_model.safetensors").is_file():
        raise SystemExit(f"{folder}: not a PEFT adapter folder (no adapter_config.json or adapter_model.safetensors)")
    config = json.loads((folder / "adapter_config.json").read_text())
    tensors = load_file(str(folder / "adapter_model.safetensors"))
    deltas = {}
    for key, a in tensors.items():
        if ".lora_A." not in key:
            continue
        module = key.split(".lora_A.")[0]
        scale = config.get("alpha_pattern", {}).get(module, config["lora_alpha"]) / config.get("rank_pattern", {}).get(
            module, config["r"]
        )
        b = tensors[key.replace(".lora_A.", ".lora_B.")]
        deltas[module] = scale * (b.float() @ a.float())
    if not deltas:
        raise SystemExit(f"{folder}: no LoRA weights in adapter_model.safetensors (is it a PEFT LoRA adapter?)")
    return deltas


def motion(phase1: dict[str, torch.Tensor], phase2: dict[str, torch.Tensor]) -> dict[str, float]:
    """Norms of Phase 1's move and Phase 2's further move, and the cosine between the two."""
    if phase1.keys() != phase2.keys():
        raise SystemExit("the two adapters train different modules: not one run's phases")
    names = sorted(phase1)
    # float64: a float32 norm of the ~10^8 concatenated entries read 1.3% low on SmolLM2's adapters
    first = torch.cat([phase1[n].flatten().double() for n in names])
    further = torch.cat([(phase2[n].double() - phase1[n].double()).flatten() for n in names])
    return {
        "phase1_norm": float(first.norm()),
        "phase2_move_norm": float(further.norm()),
        "cos_phase2_move_phase1": float(torch.nn.functional.cosine_similarity(further, first, dim=0)),
    }


def run_adapters(run: Path) -> tuple[Path, Path]:
    """A finished run's last Phase-1 adapter and its Phase-2 adapter, named from its saved config."""
    from fathom.config.load import load_config
    from fathom.schedule import final_model_dirname

    config = load_config(run / "fathom_config.yaml", check_paths=False)
    if config.sft is None or not config.phases():
        raise SystemExit(f"{run}: its fathom_config.yaml has no Phase 1 or no sft section (name a run of both phases)")
    if config.sft.lora_init == "merged":
        raise SystemExit(
            f"{run}: sft.lora_init is merged, so Phase 2's adapter is a new LoRA, not a move from Phase 1's"
        )
    phase1 = run / final_model_dirname(config.phases()[-1].max_seq_length)
    phase2 = run / final_model_dirname(config.sft.max_seq_length, instruct=True)
    for folder in (phase1, phase2):
        if not folder.is_dir():
            raise SystemExit(f"{folder}: missing (is the run finished?)")
    return phase1, phase2


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="*", type=Path, help="finished runs' output folders")
    parser.add_argument("--phase1", type=Path, help="a Phase-1 adapter that --phase2 adapters started from")
    parser.add_argument("--phase2", type=Path, action="append", default=[], help="a Phase-2 adapter (repeatable)")
    args = parser.parse_args(argv)
    pairs = [run_adapters(run) for run in args.runs]
    if args.phase2 and not args.phase1:
        parser.error("--phase2 needs --phase1, the adapter it started from")
    pairs += [(args.phase1, p2) for p2 in args.phase2]
    if not pairs:
        parser.error("name a run folder, or --phase1 and --phase2")
    print("| Phase 2 adapter | Phase 1's move | Phase 2's further move | cos(Phase 2's move, Phase 1's) |")
    print("|---|---|---|---|")
    phase1_deltas: dict[Path, dict[str, torch.Tensor]] = {}  # one --phase1 serves every --phase2: read it once
    for p1, p2 in pairs:
        if p1 not in phase1_deltas:
            phase1_deltas[p1] = adapter_delta(p1)
        m = motion(phase1_deltas[p1], adapter_delta(p2))
        print(f"| {p2} | {m['phase1_norm']:.2f} | {m['phase2_move_norm']:.2f} | {m['cos_phase2_move_phase1']:+.3f} |")


if __name__ == "__main__":
    main()
