"""The checkpoint format: one `torch.save` dict per step, published atomically.

    run_dir/step-0000100.pt   every checkpoint, kept
    run_dir/latest.pt         the newest one (a hard link to it, or a copy)
    run_dir/statistics.json   the normalisation the run trained with (`STATS_NAME`)

Contents (FORMAT_VERSION 1): `model` (the network's state_dict — the `DownscalerNet`, not the
stateless preconditioning around it — with its float32 master weights, also when DeepSpeed
computes in bf16), `ema` (EMA state: `module` is a float32 network state_dict),
`optimizer`, `scheduler`, `step`, `data` (the sample order), `rng` (see `rng.py`), `config`
(the resolved YAML), `normalisation` (what the targets were scaled with) and `metrics`.

Files are written to a temporary sibling and renamed over the target (`hpcds.atomic`), so a
crash leaves the previous checkpoint intact. Everything in them is a tensor or plain data:
they load with `torch.load(weights_only=True)`. Load errors are one-line `CheckpointError`s:
missing file, truncated or corrupt file, not an hpcds checkpoint, weights that do not fit
the configured model (naming the first mismatched parameter and the config keys that differ),
and a resume under a config that changes what the run learns (`check_resumable`).
A checkpoint's config is read back with `config_from_yaml`, which fills keys it predates
with the values that rebuild its model (`LEGACY_VALUES`).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import torch
from omegaconf import OmegaConf

from hpcds.atomic import atomic_open, temp_sibling, writing
from hpcds.config.schema import HpcdsConfig
from hpcds.errors import CheckpointError

FORMAT = "hpcds-checkpoint"
FORMAT_VERSION = 1
LATEST = "latest.pt"
STATS_NAME = "statistics.json"
REQUIRED = ("format", "version", "step", "model", "config")
RESUME_KEYS = ("ema", "optimizer", "scheduler", "data", "rng")
# config sections whose values decide parameter shapes
SHAPE_KEYS = ("model", "data.variables")
# what a resumed run may change (`check_resumable`): keys that leave what is learned as it was
# (paths, how often to log, validate and checkpoint, kernels and memory trade-offs, the
# model-parallel split, settings of other commands), and training.steps, to extend a run (its
# cosine decay then stretches to the new end). Anything else, e.g. training.lr, would silently
# make the resumed run a different one.
RESUMABLE_KEYS = (
    "run.out_dir", "grid.cache_dir", "data.lr_store", "data.hr_store", "data.forcings_store",
    "data.stats_file", "data.min_correlation", "data.max_bias", "data.check_dates",
    "benchmark", "model.backend", "model.activation_checkpointing", "model.graph_block_rows",
    "training.steps", "training.log_every", "training.val_every", "training.checkpoint_every",
    "training.run_dir", "training.resume", "training.init_from",
    "sampling", "evaluation", "parallel.model_parallel", "parallel.halo_transport", "profile",
)


# Schema keys added after checkpoints existed, with the value that rebuilds those checkpoints'
# models: a saved config that lacks the key predates it (its model had no refiner).
LEGACY_VALUES = {("model", "refiner_layers"): 0}


def step_name(step: int) -> str:
    return f"step-{step:07d}.pt"


class _KeepsWriteError:
    """A file for `torch.save` that remembers the OSError of a failed write: torch's zip
    writer turns it into "RuntimeError: [enforce fail at inline_container.cc] unexpected
    pos", which says nothing of the full disk behind it."""

    def __init__(self, f):
        self.f, self.error = f, None

    def write(self, data) -> int:
        try:
            return self.f.write(data)
        except OSError as exc:
            self.error = exc
            raise

    def flush(self) -> None:
        self.f.flush()


def save_checkpoint(run_dir: str | os.PathLike, state: dict) -> Path:
    """Write `state` as run_dir/step-XXXXXXX.pt and point latest.pt at it; both atomic."""
    run_dir = Path(run_dir)
    payload = {"format": FORMAT, "version": FORMAT_VERSION, **state}
    path = run_dir / step_name(int(state["step"]))
    with atomic_open(path, "wb") as f:  # creates run_dir if need be
        out = _KeepsWriteError(f)
        try:
            torch.save(payload, out)
        except RuntimeError:
            if out.error is None:
                raise
            raise out.error from None  # atomic_open reports it, naming `path`
    latest = run_dir / LATEST
    with writing(latest):
        tmp = temp_sibling(latest)
        try:
            try:
                os.link(path, tmp)
            except OSError:  # a filesystem without hard links
                shutil.copyfile(path, tmp)
            os.replace(tmp, latest)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
    return path


def load_checkpoint(path: str | os.PathLike, *, resume: bool = True,
                    map_location: str | torch.device = "cpu") -> dict:
    """The checkpoint dict; `resume` also requires the optimizer/scheduler/data/RNG state."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}: check the path (checkpoints are "
                              "run_dir/latest.pt and run_dir/step-XXXXXXX.pt)")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # truncated zip, garbage bytes, foreign pickles: all one message
        raise CheckpointError(
            f"checkpoint {path} is truncated or corrupt ({_first_line(exc)}): delete it and "
            f"use an earlier step-XXXXXXX.pt from {path.parent}") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not an hpcds checkpoint (no '{FORMAT}' marker)")
    if state.get("version") != FORMAT_VERSION:
        raise CheckpointError(
            f"checkpoint {path} has format version {state.get('version')}, this hpcds reads "
            f"version {FORMAT_VERSION}: use the hpcds version that wrote it")
    missing = [k for k in (*REQUIRED, *(RESUME_KEYS if resume else ())) if k not in state]
    if missing:
        raise CheckpointError(f"checkpoint {path} is incomplete: it lacks "
                              f"{', '.join(missing)}; use an earlier step-XXXXXXX.pt")
    return state


def load_model_weights(net: torch.nn.Module, path: str | os.PathLike, config_yaml: str, *,
                       use_ema: bool = True, map_location: str | torch.device = "cpu") -> dict:
    """Load a checkpoint's network weights into `net` (its EMA by default: what sampling
    uses) after checking they fit; returns the checkpoint dict (config, normalisation, …)."""
    state = load_checkpoint(path, resume=False, map_location=map_location)
    if use_ema and "ema" not in state:
        raise CheckpointError(f"checkpoint {path} holds no EMA weights: set "
                              "sampling.use_ema=false to use the raw weights")
    weights = state["ema"]["module"] if use_ema else state["model"]
    check_compatible(net, weights, state["config"], config_yaml, path)
    net.load_state_dict(weights)
    return state


def config_from_yaml(text: str, path: Path) -> HpcdsConfig:
    """A checkpoint's resolved config YAML → `HpcdsConfig` (LEGACY_VALUES for keys it predates,
    schema defaults for the rest)."""
    try:
        saved = OmegaConf.create(text)
        for (section, key), value in LEGACY_VALUES.items():
            if section in saved and key not in saved[section]:
                saved[section][key] = value
        merged = OmegaConf.merge(OmegaConf.structured(HpcdsConfig), saved)
        return OmegaConf.to_object(merged)
    except Exception as exc:  # noqa: BLE001 - any parse/merge failure is one message
        first = " ".join(str(exc).split("\n")[0].split())[:160]
        raise CheckpointError(f"checkpoint {path}: its config cannot be read ({first}); "
                              "it was written by another hpcds version") from None


def check_compatible(model: torch.nn.Module, weights: dict, ckpt_config: str,
                     config_yaml: str, path: str | os.PathLike) -> None:
    """Raise a `CheckpointError` naming the first parameter whose name or shape differs."""
    mine = model.state_dict()
    problem = None
    for key, value in weights.items():
        if key not in mine:
            problem = f"it has parameter {key!r}, which this model lacks"
        elif tuple(value.shape) != tuple(mine[key].shape):
            problem = (f"parameter {key!r} has shape {tuple(value.shape)} there and "
                       f"{tuple(mine[key].shape)} here")
        if problem:
            break
    if problem is None:
        absent = [k for k in mine if k not in weights]
        if not absent:
            return
        problem = f"parameter {absent[0]!r} is missing from it"
    raise CheckpointError(f"checkpoint {path} does not fit this model: {problem}; "
                          f"{config_difference(ckpt_config, config_yaml)}")


def config_difference(ckpt_yaml: str, yaml: str) -> str:
    """Which shape-deciding config values differ between a checkpoint's and this config."""
    diffs = _differences(ckpt_yaml, yaml, SHAPE_KEYS)
    if diffs is None:
        return "its config could not be read to compare"
    if not diffs:
        return ("the model configs agree, so the checkpoint was written by a different "
                "version of the network")
    return f"the configs differ: {_describe(diffs)}; use the checkpoint's model config"


def check_resumable(ckpt_yaml: str, yaml: str, path: str | os.PathLike) -> None:
    """Refuse to resume the run whose checkpoint `path` was written with `ckpt_yaml` under a
    config that changes what it learns: any key but `RESUMABLE_KEYS`."""
    diffs = _differences(ckpt_yaml, yaml, None)
    # a key only one config has comes from another hpcds version: not the user's change
    diffs = [(k, a, b) for k, a, b in diffs or ()
             if not _resumable(k) and a is not _ABSENT and b is not _ABSENT]
    if diffs:
        raise CheckpointError(
            f"checkpoint {path} cannot be resumed with this config: {_describe(diffs)}; "
            "put those values back (a resumed run may change training.steps, the log, "
            "validation and checkpoint intervals, paths and other commands' settings), or "
            f"fine-tune from it in a new training.run_dir with training.init_from={path}")


def _resumable(key: str) -> bool:
    return any(key == k or key.startswith(f"{k}.") for k in RESUMABLE_KEYS)


_ABSENT = object()  # a key one of two configs lacks


def _differences(ckpt_yaml: str, yaml: str, keys) -> list[tuple[str, object, object]] | None:
    """(key, value there, value here) of every leaf that differs under `keys` (None: all of
    this config's sections), in this config's order; None if a config cannot be read."""
    try:
        old = OmegaConf.to_container(OmegaConf.create(ckpt_yaml))
        new = OmegaConf.to_container(OmegaConf.create(yaml))
    except Exception:  # noqa: BLE001 - an unreadable config only loses the comparison
        return None
    if not isinstance(old, dict) or not isinstance(new, dict):
        return None
    diffs = []
    for key in (keys if keys is not None else list(new)):
        diffs.extend(_diff(key, _select(old, key), _select(new, key)))
    return diffs


def _select(tree: dict, key: str):
    for part in key.split("."):
        if not isinstance(tree, dict) or part not in tree:
            return _ABSENT
        tree = tree[part]
    return tree


def _describe(diffs: list[tuple[str, object, object]]) -> str:
    def show(v):
        return "unset" if v is _ABSENT else repr(v)
    shown = ", ".join(f"{k}={show(a)} there vs {show(b)} here" for k, a, b in diffs[:3])
    return shown + (f" (and {len(diffs) - 3} more)" if len(diffs) > 3 else "")


def _diff(key: str, a, b) -> list[tuple[str, object, object]]:
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in sorted(set(a) | set(b), key=lambda k: (list(b).index(k) if k in b else 1e9)):
            out.extend(_diff(f"{key}.{k}", a.get(k, _ABSENT), b.get(k, _ABSENT)))
        return out
    return [] if a == b else [(key, a, b)]


def _first_line(exc: BaseException) -> str:
    text = " ".join(str(exc).strip().split("\n")[0].split()) or type(exc).__name__
    return text[:160]
