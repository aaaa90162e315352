"""Worker of tests/test_ddp.py, launched by ``torchrun --nproc_per_node=2``: trains and saves rank 0's result.

Usage: ``python -m torch.distributed.run --nproc_per_node=2 tests/_ddp_worker.py OUT_FILE [override ...]``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))


def main(out_file: str, overrides: list[str]) -> None:
    from _train_helpers import ddp_trainer

    torch.set_num_threads(1)
    trainer = ddp_trainer(Path(out_file).parent / "run", *overrides)
    trainer.fit()
    results = trainer.evaluate(domains=["source"], use_best=False)
    if trainer.dist.rank == 0:
        torch.save(
            {
                "model": trainer.model.state_dict(),
                "steps": trainer.history.steps,
                "results": results,
                "world_size": trainer.dist.world_size,
            },
            out_file,
        )
    import torch.distributed as dist

    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:])
