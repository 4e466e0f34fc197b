"""tuneline: validated data in, a registered, quantized, exported model out.

    import tuneline

    config = tuneline.load_config("configs/lora.yaml", ["train.epochs=2"])
    result = tuneline.retrain(config)            # model_uri, version, alias, metrics
    model = tuneline.load_model(result.model_uri)
    model.predict(["a gripping, well acted film"])

`import tuneline` stays light: each function imports torch, Prefect or MLflow when it runs (tuneline.api).
The layers are in docs/ARCHITECTURE.md: the stage packages never import Prefect; tuneline.tasks wraps them and
tuneline.flows wires the tasks.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys

__version__ = "0.1.0"

_API = ("load_config", "load_tune_config", "retrain", "tune", "load_model", "RetrainResult", "Model")
__all__ = [*_API, "__version__"]


def __getattr__(name: str):
    if name in _API:
        from tuneline import api

        return getattr(api, name)
    raise AttributeError(f"module 'tuneline' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_API])


# A version registered before tuneline 0.2 stores its MLflow model code (then tuneline/pyfunc_model.py), which imports
# the runtime under its old names: they stay importable, as the modules that now hold that code.
_MOVED = {"tuneline.onnx_classifier": "tuneline.runtime.classifier",
          "tuneline.onnx_generator": "tuneline.runtime.generator",
          "tuneline.pyfunc_model": "tuneline.runtime.pyfunc"}


class _MovedModules(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, fullname, path=None, target=None):
        return importlib.util.spec_from_loader(fullname, self) if fullname in _MOVED else None

    def create_module(self, spec):
        return None

    def exec_module(self, module):
        # the import system returns what sys.modules holds after this: the module itself, not a copy
        sys.modules[module.__name__] = importlib.import_module(_MOVED[module.__name__])


sys.meta_path.append(_MovedModules())
