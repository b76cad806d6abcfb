"""sinabs <-> exodus-jit: swap neuron layers anywhere in a model, keeping parameters and states."""

from __future__ import annotations

import warnings
from typing import Dict, Type

import sinabs.layers as sl
import torch

from . import layers as el

SINABS_TO_EXODUS: Dict[Type[torch.nn.Module], Type[torch.nn.Module]] = {
    sl.IAF: el.IAF, sl.IAFSqueeze: el.IAFSqueeze, sl.LIF: el.LIF, sl.LIFSqueeze: el.LIFSqueeze,
    sl.ExpLeak: el.ExpLeak, sl.ExpLeakSqueeze: el.ExpLeakSqueeze,
}
EXODUS_TO_SINABS = {exodus: sinabs for sinabs, exodus in SINABS_TO_EXODUS.items()}
# decay_early values that reproduce sinabs' own dynamics
SINABS_DECAY_EARLY = {el.IAF: True, el.IAFSqueeze: True, el.LIF: True, el.LIFSqueeze: True,
                      el.ExpLeak: False, el.ExpLeakSqueeze: False}


def _rebuild(layer: torch.nn.Module, new_class: type, kwargs: dict) -> torch.nn.Module:
    """A `new_class` layer that shares `layer`'s parameter and state tensors (so an optimizer
    holding them keeps working), recordings and mode."""
    new = new_class(**kwargs)
    for name in list(new._parameters):
        new._parameters[name] = layer._parameters.get(name)
    for name, buffer in layer._buffers.items():
        new._buffers[name] = buffer
    for attr in ("recordings", "firing_rate"):
        if hasattr(layer, attr):
            setattr(new, attr, getattr(layer, attr))
    new.train(layer.training)
    return new


def _arg_dict_without_tensors_from_state(layer) -> dict:
    kwargs = dict(layer.arg_dict)
    kwargs.pop("shape", None)  # states are carried over as they are
    return kwargs


def _replace(model: torch.nn.Module, mapping, convert_one) -> torch.nn.Module:
    if type(model) in mapping:
        return convert_one(model)
    for name, child in model.named_children():
        new_child = _replace(child, mapping, convert_one)
        if new_child is not child:
            setattr(model, name, new_child)
    return model


def sinabs_to_exodus(model: torch.nn.Module) -> torch.nn.Module:
    """Replace every sinabs IAF/LIF/ExpLeak (and Squeeze) layer in `model` by its exodus-jit
    counterpart, at any depth; parameters, states, device and dtype are kept. A layer whose
    options exodus-jit cannot run stays as it is, with a warning saying why. Returns the model
    (converted in place, or the new layer when `model` itself is one)."""

    def convert(layer):
        new_class = SINABS_TO_EXODUS[type(layer)]
        try:
            return _rebuild(layer, new_class, _arg_dict_without_tensors_from_state(layer))
        except NotImplementedError as exc:
            warnings.warn(f"{type(layer).__name__} kept as sinabs layer: {exc}", stacklevel=3)
            return layer

    return _replace(model, SINABS_TO_EXODUS, convert)


def exodus_to_sinabs(model: torch.nn.Module) -> torch.nn.Module:
    """Replace every exodus-jit layer in `model` by the sinabs layer it mirrors (e.g. for
    sinabs' DynapCNN/Speck tools). A layer with a decay_early setting sinabs cannot express stays,
    with a warning."""

    def convert(layer):
        kwargs = _arg_dict_without_tensors_from_state(layer)
        decay_early = kwargs.pop("decay_early")
        if decay_early != SINABS_DECAY_EARLY[type(layer)]:
            warnings.warn(f"{type(layer).__name__} kept as exodus layer: decay_early={decay_early} "
                          "has no sinabs equivalent", stacklevel=3)
            return layer
        return _rebuild(layer, EXODUS_TO_SINABS[type(layer)], kwargs)

    return _replace(model, EXODUS_TO_SINABS, convert)
