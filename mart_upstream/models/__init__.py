"""Model registry: name -> entry (config dataclass, model class). Open for further baselines.

A model is one module in this package: its config dataclass and its ``SSLModel`` subclass, which states
what the rest of the project needs to know about it (``tiny_config``, ``has_unused_parameters``,
``upgrade_v1_config``, ``trainable``), and one ``register_model`` line below. Training, checkpoints, the
tests and the benchmarks read the models from here.

Two kinds: the pretraining models (``model_names``: what ``mart-pretrain`` trains and the benchmarks
compare) and published reference models with fixed weights (``reference_names``: ``musicnn``), which
are embedded and served like the others (``all_names``) but never trained.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Type

from ..config import from_dict
from .base import SSLModel
from .byol import BYOL, BYOLConfig
from .mart import Mart, MartConfig
from .melcpc import MelCPC, MelCPCConfig
from .moco import MoCo, MoCoConfig
from .musicnn import Musicnn, MusicnnConfig
from .pemr import Pemr, PemrConfig
from .siamese import MultilevelSiameseConfig, Siamese, SiameseConfig
from .simclr import SimCLR, SimCLRConfig


@dataclass(frozen=True)
class ModelEntry:
    name: str
    config_cls: type
    model_cls: Type[SSLModel]

    def config(self, data: Optional[dict] = None) -> Any:
        """The config dataclass from a (partial) dict over its defaults."""
        return from_dict(self.config_cls, data, where=self.name)

    def tiny_config(self) -> dict:
        """Config overrides of the narrowed, shortened architecture (a fresh copy)."""
        return copy.deepcopy(self.model_cls.tiny_config)

    @property
    def trainable(self) -> bool:
        """False for a published reference model with fixed weights (``mart-pretrain`` refuses it)."""
        return self.model_cls.trainable

    def find_unused_parameters(self, config: Any) -> bool:
        """DDP's ``find_unused_parameters`` for training with ``config``."""
        return self.model_cls.has_unused_parameters(config)


MODELS: Dict[str, ModelEntry] = {}


def register_model(name: str, config_cls: type, model_cls: Type[SSLModel]) -> None:
    MODELS[name] = ModelEntry(name, config_cls, model_cls)


register_model("mart", MartConfig, Mart)
register_model("pemr", PemrConfig, Pemr)
register_model("simclr", SimCLRConfig, SimCLR)
register_model("byol", BYOLConfig, BYOL)
register_model("moco", MoCoConfig, MoCo)
register_model("melcpc", MelCPCConfig, MelCPC)
register_model("cnn5_infonce", SiameseConfig, Siamese)
register_model("cnn5_multilevel", MultilevelSiameseConfig, Siamese)
register_model("musicnn", MusicnnConfig, Musicnn)


def model_names() -> List[str]:
    """The pretraining models (what ``mart-pretrain`` trains)."""
    return sorted(n for n, e in MODELS.items() if e.trainable)


def reference_names() -> List[str]:
    """The published reference models with fixed weights (embedded and served, never trained)."""
    return sorted(n for n, e in MODELS.items() if not e.trainable)


def all_names() -> List[str]:
    """Every registered model: what checkpoints, ``mart-embed`` and the adapters accept."""
    return sorted(MODELS)


def get_entry(name: str) -> ModelEntry:
    if name not in MODELS:
        raise KeyError(f"unknown model {name!r}; available: {', '.join(all_names())}")
    return MODELS[name]


def build_config(name: str, data: Optional[dict] = None):
    return get_entry(name).config(data)


def build_model(name: str, config=None) -> SSLModel:
    entry = get_entry(name)
    if config is None or isinstance(config, dict):
        config = entry.config(config)
    return entry.model_cls(config)


def tiny_config(name: str) -> dict:
    """``name``'s tiny config overrides (CPU tests, smoke runs of the benchmarks)."""
    return get_entry(name).tiny_config()
