"""Model registry: name -> (config dataclass, model class). Open for further baselines."""
from __future__ import annotations

from typing import Dict, Optional, Tuple, Type

from ..config import from_dict
from .base import SSLModel
from .mart import Mart, MartConfig
from .pemr import Pemr, PemrConfig
from .simclr import SimCLR, SimCLRConfig

MODELS: Dict[str, Tuple[type, Type[SSLModel]]] = {}


def register_model(name: str, config_cls: type, model_cls: Type[SSLModel]) -> None:
    MODELS[name] = (config_cls, model_cls)


register_model("mart", MartConfig, Mart)
register_model("pemr", PemrConfig, Pemr)
register_model("simclr", SimCLRConfig, SimCLR)


def model_names():
    return sorted(MODELS)


def get_entry(name: str) -> Tuple[type, Type[SSLModel]]:
    if name not in MODELS:
        raise KeyError(f"unknown model {name!r}; available: {', '.join(model_names())}")
    return MODELS[name]


def build_config(name: str, data: Optional[dict] = None):
    return from_dict(get_entry(name)[0], data, where=name)


def build_model(name: str, config=None) -> SSLModel:
    cfg_cls, model_cls = get_entry(name)
    if config is None or isinstance(config, dict):
        config = from_dict(cfg_cls, config, where=name)
    return model_cls(config)
