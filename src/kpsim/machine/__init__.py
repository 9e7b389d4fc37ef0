"""Layer 5: the composition root (builds and boots a Machine from a config)."""

from kpsim.machine.boot import Machine, boot
from kpsim.machine.config import MachineConfig

__all__ = ["Machine", "MachineConfig", "boot"]
