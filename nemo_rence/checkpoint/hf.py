"""Hugging Face safetensors directories <-> Megatron-Core models.

Reading: :func:`read_hf_config` + :func:`load_hf_state_dict` (``model.safetensors`` or sharded
``model-0000i-of-0000n.safetensors`` with ``model.safetensors.index.json``; every file's header
is checked against its size first, so a truncated file fails naming the tensor that is cut off);
:class:`SafetensorsDir` is the lazy version, from which a pipeline stage reads only its tensors.
:func:`megatron_state_for_rank` turns full megatron tensors (``mapping.hf_to_megatron``) into one
rank's TP shard of its PP stage with stage-local names; :func:`load_hf_into_model` does it all
for a built ``GPTModel`` and copies the tensors in, checking every name and shape.

Writing: :func:`iter_full_megatron_tensors` yields a stage's full (TP-gathered) tensors with
global names, :func:`model_to_hf_tensors` maps them to HF names tensor by tensor, and
:func:`save_hf_dir` streams ``(hf_name, tensor)`` pairs into size-bounded safetensors shards plus
the index and ``config.json``, written into a temp dir that is renamed into place at the end.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from nemo_rence.arch import ArchSpec
from nemo_rence.checkpoint.mapping import (
    CheckpointError,
    hf_to_megatron,
    megatron_to_hf,
    to_global_name,
    to_local_name,
    tp_gather,
    tp_partition_dim,
    tp_shard,
)

__all__ = [
    "SafetensorsDir",
    "SaveSummary",
    "atomic_dir",
    "check_safetensors_file",
    "commit_dir",
    "copy_into_model",
    "detect_spec",
    "iter_full_megatron_tensors",
    "load_hf_into_model",
    "load_hf_state_dict",
    "megatron_state_for_rank",
    "model_to_hf_tensors",
    "read_hf_config",
    "save_hf_dir",
]

SAFE_INDEX = "model.safetensors.index.json"
_DTYPE_BYTES = {
    "F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1,
    "BOOL": 1, "F8_E4M3": 1, "F8_E5M2": 1,
}  # fmt: skip


# --------------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------------


def read_hf_config(hf_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """The ``config.json`` of an HF model directory, as a dict."""
    path = Path(hf_dir) / "config.json"
    if not path.is_file():
        raise FileNotFoundError(f"{hf_dir} is not an HF model directory: no config.json")
    return dict(json.loads(path.read_text()))


def _safetensors_files(hf_dir: Path) -> list[Path]:
    index = hf_dir / SAFE_INDEX
    if index.is_file():
        weight_map = json.loads(index.read_text())["weight_map"]
        files = sorted({hf_dir / f for f in weight_map.values()})
        for f in files:
            if not f.is_file():
                raise CheckpointError(f"{index} lists {f.name}, which does not exist")
        return files
    single = hf_dir / "model.safetensors"
    if single.is_file():
        return [single]
    found = sorted(hf_dir.glob("*.safetensors"))
    if not found:
        raise FileNotFoundError(f"no *.safetensors weights in {hf_dir}")
    return found


def check_safetensors_file(path: str | os.PathLike[str]) -> dict[str, tuple[int, ...]]:
    """Validate a safetensors file's header against its size; return ``{name: shape}``.

    Raises :class:`CheckpointError` naming the first tensor whose bytes lie past the end of the
    file (a truncated download or copy) or whose byte count does not match its shape.
    """
    path = Path(path)
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise CheckpointError(f"{path}: truncated safetensors file ({size} bytes, no header)")
        (header_len,) = struct.unpack("<Q", head)
        if 8 + header_len > size:
            raise CheckpointError(f"{path}: truncated safetensors file (header cut off)")
        header = json.loads(f.read(header_len))
    data_bytes = size - 8 - header_len
    shapes: dict[str, tuple[int, ...]] = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        start, end = info["data_offsets"]
        shape = tuple(int(s) for s in info["shape"])
        numel = 1
        for s in shape:
            numel *= s
        if end > data_bytes:
            raise CheckpointError(
                f"{path}: tensor {name!r} {shape} is truncated: needs bytes {start}..{end} of "
                f"the data section, the file holds {data_bytes}"
            )
        width = _DTYPE_BYTES.get(info["dtype"])
        if width is not None and end - start != numel * width:
            raise CheckpointError(
                f"{path}: tensor {name!r} has {end - start} bytes, shape {shape} needs "
                f"{numel * width}"
            )
        shapes[name] = shape
    return shapes


def load_hf_state_dict(hf_dir: str | os.PathLike[str]) -> dict[str, Tensor]:
    """All tensors of an HF safetensors directory (single file or sharded with an index)."""
    from safetensors.torch import load_file

    out: dict[str, Tensor] = {}
    for f in _safetensors_files(Path(hf_dir)):
        check_safetensors_file(f)
        out.update(load_file(f))
    return out


class SafetensorsDir(Mapping[str, Tensor]):
    """A lazy view of an HF safetensors directory: tensors are read on access.

    Headers are validated up front (:func:`check_safetensors_file`), so ``shape_of`` answers
    without reading data and a truncated file fails before any tensor is used.
    """

    def __init__(self, hf_dir: str | os.PathLike[str]) -> None:
        self._file: dict[str, Path] = {}
        self._shape: dict[str, tuple[int, ...]] = {}
        for f in _safetensors_files(Path(hf_dir)):
            for name, shape in check_safetensors_file(f).items():
                self._file[name] = f
                self._shape[name] = shape

    def __getitem__(self, name: str) -> Tensor:
        from safetensors import safe_open

        with safe_open(str(self._file[name]), framework="pt") as f:
            return f.get_tensor(name)

    def __iter__(self) -> Iterator[str]:
        return iter(self._file)

    def __len__(self) -> int:
        return len(self._file)

    def shape_of(self, name: str) -> tuple[int, ...]:
        return self._shape[name]


# --------------------------------------------------------------------------------------------
# Full megatron tensors -> one rank's shard
# --------------------------------------------------------------------------------------------


def megatron_state_for_rank(
    full: Mapping[str, Tensor],
    arch: ArchSpec,
    *,
    tp_rank: int,
    tp_size: int,
    layers: range,
    pre_process: bool,
    post_process: bool,
) -> dict[str, Tensor]:
    """This rank's tensors, named as in its ``GPTModel.state_dict()`` (stage-local layer names).

    Args:
        full: full megatron tensors with global names (``mapping.hf_to_megatron``).
        layers: the global layer indices of this PP stage (``mapping.stage_layer_range``).
        pre_process / post_process: whether the stage holds the embedding / output layer.
    With tied embeddings, a last stage that is not also the first gets ``output_layer.weight``
    = the embedding (megatron keeps that copy there and syncs its gradient).
    """
    out: dict[str, Tensor] = {}
    offset = layers.start
    for name, t in full.items():
        if name.startswith("decoder.layers."):
            i = int(name.split(".")[2])
            if i not in layers:
                continue
            out[to_local_name(name, offset)] = tp_shard(name, t, tp_rank, tp_size)
        elif name == "embedding.word_embeddings.weight":
            if pre_process:
                out[name] = tp_shard(name, t, tp_rank, tp_size)
            if post_process and not pre_process and arch.tie_word_embeddings:
                out["output_layer.weight"] = tp_shard("output_layer.weight", t, tp_rank, tp_size)
        elif name in ("decoder.final_layernorm.weight", "output_layer.weight"):
            if post_process:
                out[name] = tp_shard(name, t, tp_rank, tp_size)
        else:
            raise CheckpointError(f"unknown megatron tensor {name!r}")
    return out


def detect_spec(model: torch.nn.Module) -> str:
    """``'te'`` if the model's norms are fused into TE linears (``layer_norm_weight``), else local."""
    names = model.state_dict().keys()
    return "te" if any(n.endswith(".layer_norm_weight") for n in names) else "local"


def _parallel_info(model: Any) -> tuple[int, int, range, bool, bool]:
    from megatron.core import parallel_state

    from nemo_rence.checkpoint.mapping import stage_layer_range

    return (
        parallel_state.get_tensor_model_parallel_rank(),
        parallel_state.get_tensor_model_parallel_world_size(),
        stage_layer_range(model),
        bool(model.pre_process),
        bool(model.post_process),
    )


def copy_into_model(model: torch.nn.Module, state: Mapping[str, Tensor]) -> int:
    """Copy ``state`` (names as in ``model.state_dict()``) into the model; return bytes copied.

    Every model tensor except ``*._extra_state`` must be present with its exact shape;
    errors name the tensor (and expected vs found shape).
    """
    targets = {k: v for k, v in model.state_dict(keep_vars=True).items() if isinstance(v, Tensor)}
    missing = [k for k in targets if k not in state]
    if missing:
        raise CheckpointError(
            f"checkpoint lacks {len(missing)} tensor(s) of the model: {', '.join(missing[:8])}"
        )
    extra = [k for k in state if k not in targets]
    if extra:
        raise CheckpointError(f"checkpoint tensor(s) not in the model: {', '.join(extra[:8])}")
    moved = 0
    with torch.no_grad():
        for k, dst in targets.items():
            src = state[k]
            if tuple(src.shape) != tuple(dst.shape):
                raise CheckpointError(
                    f"tensor {k!r}: model expects shape {tuple(dst.shape)}, "
                    f"checkpoint has {tuple(src.shape)}"
                )
            dst.copy_(src.to(device=dst.device, dtype=dst.dtype))
            moved += dst.numel() * dst.element_size()
    return moved


def load_hf_into_model(
    model: torch.nn.Module,
    hf_dir_or_state: str | os.PathLike[str] | Mapping[str, Tensor],
    arch: ArchSpec,
) -> int:
    """Load HF weights (a directory or a state dict) into this rank's built ``GPTModel``.

    Works at any TP/PP (reads the parallel state and the model's layer numbers); the layer spec
    (local or TE names) is detected from the model. From a directory, only this pipeline
    stage's tensors are read. Returns the bytes copied on this rank.
    """
    sd = (
        hf_dir_or_state if isinstance(hf_dir_or_state, Mapping) else SafetensorsDir(hf_dir_or_state)
    )
    tp_rank, tp_size, layers, pre, post = _parallel_info(model)
    # A tied last stage holds a copy of the embedding as its output layer.
    full = hf_to_megatron(
        sd, arch, spec=detect_spec(model), layers=layers,
        embedding=pre or (post and arch.tie_word_embeddings), head=post,
    )  # fmt: skip
    state = megatron_state_for_rank(
        full, arch, tp_rank=tp_rank, tp_size=tp_size, layers=layers,
        pre_process=pre, post_process=post,
    )  # fmt: skip
    return copy_into_model(model, state)


# --------------------------------------------------------------------------------------------
# Model -> full tensors -> HF
# --------------------------------------------------------------------------------------------


def iter_full_megatron_tensors(model: torch.nn.Module) -> Iterator[tuple[str, Tensor]]:
    """This PP stage's tensors, TP-gathered (collective over the TP group), global names.

    Every TP rank of the stage must call it (it all-gathers each sharded tensor); every rank
    receives the full tensors. ``*._extra_state`` entries are skipped. With PP > 1 each stage
    yields only its own layers; with tied embeddings the last stage's ``output_layer.weight``
    copy is yielded too (``mapping.megatron_to_hf`` drops it).
    """
    import torch.distributed as dist
    from megatron.core import parallel_state

    tp_size = parallel_state.get_tensor_model_parallel_world_size()
    group = parallel_state.get_tensor_model_parallel_group() if tp_size > 1 else None
    offset = _parallel_info(model)[2].start
    for name, t in model.state_dict().items():
        if not isinstance(t, Tensor):
            continue
        t = t.detach()
        if tp_size > 1 and tp_partition_dim(name) is not None:
            shards = [torch.empty_like(t) for _ in range(tp_size)]
            dist.all_gather(shards, t.contiguous(), group=group)
            t = tp_gather(name, shards)
        yield to_global_name(name, offset), t


def model_to_hf_tensors(model: torch.nn.Module, arch: ArchSpec) -> Iterator[tuple[str, Tensor]]:
    """HF-named full tensors of this PP stage, one megatron tensor at a time."""
    for name, t in iter_full_megatron_tensors(model):
        yield from megatron_to_hf(name, t, arch)


class SaveSummary(dict[str, Any]):
    """``{'tensors': n, 'bytes': n, 'files': [...], 'path': str}`` returned by the writers."""


def _umask() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return umask


def atomic_dir(out_dir: Path) -> Path:
    """A fresh temp dir next to ``out_dir`` (same filesystem), to be renamed onto it."""
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes it 0700; give it the usual permissions
    return tmp


def commit_dir(tmp: Path, out_dir: Path) -> None:
    """Move ``tmp`` onto ``out_dir`` (an existing ``out_dir`` is replaced)."""
    if out_dir.exists():
        old = out_dir.with_name(f".{out_dir.name}.old-{os.getpid()}")
        os.replace(out_dir, old)
        os.replace(tmp, out_dir)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, out_dir)


def _own_storage(t: Tensor) -> Tensor:
    t = t.detach().contiguous().cpu()
    if t.untyped_storage().nbytes() != t.numel() * t.element_size():
        t = t.clone()  # a view (e.g. q of a fused qkv): safetensors refuses shared storage
    return t


def save_hf_dir(
    tensors: Iterable[tuple[str, Tensor]],
    out_dir: str | os.PathLike[str],
    config: Mapping[str, Any],
    *,
    max_shard_bytes: int = 5 * 2**30,
    dtype: torch.dtype | None = None,
    extra_files_from: str | os.PathLike[str] | None = None,
    progress: bool = False,
    total: int | None = None,
) -> SaveSummary:
    """Stream HF tensors into ``out_dir`` as safetensors shards + index + ``config.json``.

    Tensors are written as soon as a shard reaches ``max_shard_bytes`` (so at most one shard is
    held in memory). One shard is named ``model.safetensors``; several are
    ``model-0000i-of-0000n.safetensors`` with ``model.safetensors.index.json``. The directory
    is assembled in a temp dir and renamed into place. ``extra_files_from``: a directory whose
    tokenizer / generation files (everything but weights and config) are copied along.
    ``progress``: show a tqdm bar (``total``: the number of tensors, if known).

    Long on purpose: one streaming pass (cast, shard, write, index) whose state is the open shard.
    """
    from safetensors.torch import save_file

    out = Path(out_dir)
    tmp = atomic_dir(out)
    try:
        shard: dict[str, Tensor] = {}
        shard_bytes = 0
        written: list[tuple[str, list[str]]] = []  # (temp file name, tensor names)
        total_bytes = 0
        n = 0

        def flush() -> None:
            nonlocal shard, shard_bytes
            if shard:
                fname = f"shard-{len(written):05d}.safetensors"
                save_file(shard, str(tmp / fname), metadata={"format": "pt"})
                os.chmod(tmp / fname, 0o666 & ~_umask())
                written.append((fname, list(shard)))
                shard, shard_bytes = {}, 0

        bar = _progress(progress, "write HF", total)
        for name, t in tensors:
            t = _own_storage(t if dtype is None else t.to(dtype))
            nbytes = t.numel() * t.element_size()
            if shard and shard_bytes + nbytes > max_shard_bytes:
                flush()
            if name in shard or any(name in names for _, names in written):
                raise CheckpointError(f"tensor {name!r} written twice")
            shard[name] = t
            shard_bytes += nbytes
            total_bytes += nbytes
            n += 1
            if bar is not None:
                bar.update(1)
                bar.set_postfix_str(f"{total_bytes / 2**20:.1f} MiB", refresh=False)
        flush()
        if bar is not None:
            bar.close()
        files: list[str] = []
        if len(written) == 1:
            os.replace(tmp / written[0][0], tmp / "model.safetensors")
            files = ["model.safetensors"]
        else:
            weight_map: dict[str, str] = {}
            for i, (fname, names) in enumerate(written):
                final = f"model-{i + 1:05d}-of-{len(written):05d}.safetensors"
                os.replace(tmp / fname, tmp / final)
                files.append(final)
                weight_map.update(dict.fromkeys(names, final))
            (tmp / SAFE_INDEX).write_text(
                json.dumps(
                    {"metadata": {"total_size": total_bytes}, "weight_map": weight_map}, indent=2
                )
            )
        if extra_files_from is not None:
            for f in Path(extra_files_from).iterdir():
                skip = f.suffix in (".safetensors", ".bin", ".gguf") or f.name in (
                    "config.json", SAFE_INDEX,
                )  # fmt: skip
                if f.is_file() and not skip:
                    shutil.copy2(f, tmp / f.name)
        (tmp / "config.json").write_text(json.dumps(dict(config), indent=2, sort_keys=True))
        commit_dir(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return SaveSummary(tensors=n, bytes=total_bytes, files=files, path=str(out))


def _progress(enabled: bool, desc: str, total: int | None = None) -> Any:
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="tensor")
