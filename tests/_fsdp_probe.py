"""One rank of a real FSDP run (torchrun, gloo, real CPU tensors), counted as ``fathom plan --simulate``
counts: ``torchrun --nproc_per_node N tests/_fsdp_probe.py '<json config>' SEQ``. Rank 0 prints its
``SimulatedStep.as_dict()`` as JSON, the reference for the simulation's fake process group."""

from __future__ import annotations

import json
import sys

import torch.distributed as dist

from fathom.config import config_from_dict
from fathom.schedule import plan_phases
from fathom.train.simulate import simulate_phase


def main() -> None:
    config = config_from_dict(json.loads(sys.argv[1]))
    dist.init_process_group("gloo")
    try:
        plan = plan_phases(config, dist.get_world_size())[int(sys.argv[2])]
        result = simulate_phase(config, plan, fake=False, shards=dist.get_world_size())
        if dist.get_rank() == 0:
            print(json.dumps(result.as_dict()))
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
