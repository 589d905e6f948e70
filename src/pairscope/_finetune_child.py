"""A fine-tuning candidate's training, in its own process and session.

``python -m pairscope._finetune_child SNAPSHOT OUT CONFIG_JSON NICE PARENT_PID``:
trains one candidate at low CPU priority; ends itself if pairscope (the parent)
is gone, so a killed run leaves no training behind.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time

from ._threads import lower_process_priority


def _end_with_parent(parent: int) -> None:
    while True:
        time.sleep(1.0)
        if os.getppid() != parent:
            os._exit(3)


def main(argv: list[str]) -> int:
    snapshot, out, config, nice, parent = argv
    threading.Thread(target=_end_with_parent, args=(int(parent),), daemon=True).start()
    lower_process_priority(int(nice))
    from .train import TrainConfig, train

    train([snapshot], out, TrainConfig(**json.loads(config)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
