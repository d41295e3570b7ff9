"""Test harness: ``python -m torch.distributed.run ... tests/fsdp_cpu_launch.py --spec SPEC``
runs ssd_math.train under accelerate's real FSDP2 path on CPU processes (gloo).

accelerate only turns FSDP on for accelerator devices: with ACCELERATE_USE_CPU its state says
MULTI_CPU even when the environment (from envs/accelerate/fsdp.yaml) asks for FSDP. This shim
flips that one field after AcceleratorState is built; everything else is the real code: the
plugin read from the environment, ``fsdp2_prepare_model`` (fully_shard on a CPU mesh), FSDP2's
reduce-scatter, ``get_state_dict``, torch.distributed.checkpoint. Not a test module (no test_).
"""

import sys

from accelerate.state import AcceleratorState, PartialState
from accelerate.utils import DistributedType

_orig_init = AcceleratorState.__init__


def _init(self, *args, **kwargs):
    _orig_init(self, *args, **kwargs)
    plugin = kwargs.get("fsdp_plugin")
    if self.distributed_type == DistributedType.MULTI_CPU and plugin is not None:
        # both shared states: every AcceleratorState() re-reads PartialState's
        PartialState._shared_state["distributed_type"] = DistributedType.FSDP
        self.distributed_type = DistributedType.FSDP
        self.fsdp_plugin = plugin


AcceleratorState.__init__ = _init

if __name__ == "__main__":
    from ssd_math.train import main

    main(sys.argv[1:])
