"""The changes mdlARC needs to run in the benchmark (scripts/bench_mdlarc.py), as text patches.

mdlARC (github.com/mvakde/mdlARC) is written for one CUDA GPU: flash-attn's varlen kernel,
torch.compile, bfloat16 everywhere and a device check that refuses the CPU. The benchmark runs
it on one CPU thread, so a copy of its sources is patched (the original is never changed):

- common.py: the CPU when there is no CUDA; numba when it is installed (else its loop runs as
  plain Python);
- tinytransformer.py: one torch SDPA call per packed sequence where flash-attn's varlen kernel
  is missing (causal, same scale and dropout); no flex-attention block masks off CUDA (only the
  CUDA decode path reads them);
- train.py: NorMuon off CUDA (its Newton-Schulz in float32 there, bfloat16 on CUDA as before),
  no torch.compile of the model, a wall-clock stop (``args.max_seconds``, from the first step)
  and a JSONL log of every optimizer step (``args.bench_log``: step, s, loss);
- evaluate.py: no torch.compile; float32 inference on the CPU (bfloat16 matmuls there are tens
  of times slower than float32), bfloat16 on CUDA as before.

Each anchor must occur exactly once in its file, or the patch is a DataError naming the file.
"""

from __future__ import annotations

import difflib
import shutil
from pathlib import Path

from arcdiff.errors import DataError

_COMMON = (
    (
        "from numba import njit\n",
        "try:  # bench patch: numba when it is installed, else the same loop in plain Python\n"
        "    from numba import njit\n"
        "except ImportError:\n\n"
        "    def njit(function):\n"
        "        return function\n",
    ),
    (
        "def resolve_device(device_str: str) -> torch.device:\n",
        "def resolve_device(device_str: str) -> torch.device:\n"
        "    if not torch.cuda.is_available():\n"
        '        return torch.device("cpu")  # bench patch: the CPU when there is no CUDA\n',
    ),
)

_TINYTRANSFORMER = (
    (
        "class MultiHeadSelfAttention(nn.Module):\n",
        "def _sdpa_varlen(qkv, cu_seqlens, dropout_p, is_causal):\n"
        '    """bench patch: flash_attn_varlen_qkvpacked_func without flash-attn, one SDPA call\n'
        '    per packed sequence. qkv (total, 3, H, D) -> (total, H, D)."""\n'
        "    bounds = cu_seqlens.tolist()\n"
        "    parts = []\n"
        "    for start, end in zip(bounds[:-1], bounds[1:]):\n"
        "        q, k, v = qkv[start:end].permute(1, 2, 0, 3).unbind(0)  # (H, L, D) each\n"
        "        out = F.scaled_dot_product_attention(\n"
        "            q, k, v, dropout_p=dropout_p, is_causal=is_causal\n"
        "        )\n"
        "        parts.append(out.transpose(0, 1))  # (L, H, D)\n"
        "    return torch.cat(parts, dim=0)\n\n\n"
        "class MultiHeadSelfAttention(nn.Module):\n",
    ),
    (
        "        if not self._has_flash_attn_varlen:\n"
        "            raise RuntimeError(\n"
        '                "flash-attn varlen attention requested, '
        'but flash-attn is not installed."\n'
        "            )\n"
        '        if qkv.device.type != "cuda":\n'
        '            raise RuntimeError("flash-attn varlen kernels require CUDA tensors.")\n',
        '        if not self._has_flash_attn_varlen or qkv.device.type != "cuda":\n'
        "            return _sdpa_varlen(qkv, cu_seqlens, dropout_p, is_causal)  # bench patch\n",
    ),
    (
        "        if create_block_mask is None or kv_len < 1:\n",
        "        # bench patch: only the CUDA decode path (flex attention) reads block masks\n"
        '        if create_block_mask is None or kv_len < 1 or device.type != "cuda":\n',
    ),
)

_BENCH_HELPERS = '''# bench patch: a wall-clock budget (args.max_seconds, from the first step)
# and a JSONL log of every optimizer step (args.bench_log: step, s, loss)
import json as _bench_json
import time as _bench_time

_BENCH: Dict[str, Any] = {}


def _bench_start(args: argparse.Namespace) -> None:
    log = getattr(args, "bench_log", None)
    _BENCH.clear()
    _BENCH.update(
        start=_bench_time.monotonic(),
        max_seconds=float(getattr(args, "max_seconds", None) or math.inf),
        steps=0,
        log=open(log, "w") if log else None,
    )


def _bench_over() -> bool:
    return bool(_BENCH) and _bench_time.monotonic() - _BENCH["start"] >= _BENCH["max_seconds"]


def _bench_step(loss: torch.Tensor) -> bool:
    """Log one optimizer step; True once the budget is spent."""
    if not _BENCH:
        return False
    _BENCH["steps"] += 1
    if _BENCH["log"] is not None:
        seconds = _bench_time.monotonic() - _BENCH["start"]
        row = {"step": _BENCH["steps"], "s": seconds, "loss": float(loss)}
        _BENCH["log"].write(_bench_json.dumps(row) + "\\n")
        _BENCH["log"].flush()
    return _bench_over()


def train_one_epoch(
'''

_STEP_END = (
    "            accum_index = 0\n            optimizer_step += 1\n            maybe_log_window()\n"
)
_TRAIN = (
    (
        "    X = G.bfloat16()\n",
        "    X = G.bfloat16() if G.is_cuda else G.float()  # bench patch: bf16 where it is fast\n",
    ),
    (
        '    if device.type != "cuda":\n        return False, "NorMuon requires CUDA."\n',
        '    if device.type != "cuda":\n'
        '        return True, ""  # bench patch: its update is plain torch; it runs on the CPU\n',
    ),
    ("def train_one_epoch(\n", _BENCH_HELPERS),
    (
        _STEP_END,
        _STEP_END + "            if _bench_step(batch_loss):  # bench patch\n"
        "                break\n",
    ),
    (
        '    if hasattr(torch, "compile") and device.type == "cuda":\n',
        "    # bench patch: args.compile (False in the benchmark) turns torch.compile off\n"
        '    if hasattr(torch, "compile") and device.type == "cuda" '
        'and getattr(args, "compile", True):\n',
    ),
    (
        '    augmentor = getattr(dataloader, "augmentor", None)\n\n    try:\n',
        '    augmentor = getattr(dataloader, "augmentor", None)\n'
        "    _bench_start(args)  # bench patch\n\n    try:\n",
    ),
    (
        "                log_handle=log_handle,\n            )\n",
        "                log_handle=log_handle,\n            )\n"
        "            if _bench_over():  # bench patch\n"
        "                print(f\"Time budget reached after {_BENCH['steps']} steps\")\n"
        "                break\n",
    ),
)

_EVALUATE = (
    (
        '@torch.compile(mode="default", fullgraph=True)\ndef _compiled_grid_update(',
        "# bench patch: no torch.compile\ndef _compiled_grid_update(",
    ),
    (
        "        model._compiled_decode = torch.compile("
        'model.forward_generate, mode="default", fullgraph=True)\n',
        "        model._compiled_decode = model.forward_generate  # bench patch: no compile\n",
    ),
    (
        "example_embeds = model.example_embedding(example_ids_tensor).to(dtype=torch.bfloat16)\n",
        "example_embeds = model.example_embedding(example_ids_tensor)  # bench patch: its dtype\n",
    ),
    (
        "        k_buf = torch.zeros((B, H, max_model_len, D), "
        "dtype=torch.bfloat16, device=device)\n"
        "        v_buf = torch.zeros((B, H, max_model_len, D), "
        "dtype=torch.bfloat16, device=device)\n",
        "        # bench patch: the cache in the model's dtype (bfloat16 on CUDA, float32 on CPU)\n"
        "        k_buf = torch.zeros((B, H, max_model_len, D), dtype=k.dtype, device=device)\n"
        "        v_buf = torch.zeros((B, H, max_model_len, D), dtype=v.dtype, device=device)\n",
    ),
    (
        "    if next(model.parameters()).dtype != torch.bfloat16:\n",
        "    # bench patch: bfloat16 on CUDA only; on the CPU its matmuls are far slower\n"
        '    if device.type == "cuda" and next(model.parameters()).dtype != torch.bfloat16:\n',
    ),
)

PATCHES: dict[str, tuple[tuple[str, str], ...]] = {
    "src/common.py": _COMMON,
    "src/tinytransformer.py": _TINYTRANSFORMER,
    "src/train.py": _TRAIN,
    "src/evaluate.py": _EVALUATE,
}
REQUIRED = ("src/build.py", *PATCHES)  # the files the driver imports
SKIPPED = ("assets", "runs", "data", ".git", "__pycache__")  # data and outputs: not copied


def patch_file(name: str, source: str) -> tuple[str, str]:
    """``source`` (mdlARC's file ``name``) with the benchmark's changes; returns (patched text,
    unified diff). An anchor that is not there exactly once is a DataError naming the file."""
    if name not in PATCHES:
        raise DataError(f"{name}: not a file the benchmark patches ({', '.join(PATCHES)})")
    patched = source
    for anchor, replacement in PATCHES[name]:
        count = patched.count(anchor)
        if count != 1:
            first = anchor.strip().splitlines()[0]
            raise DataError(
                f"{name}: the code the benchmark patches is there {count} times, not once "
                f"({first!r}; another version of mdlARC?)"
            )
        patched = patched.replace(anchor, replacement)
    diff = difflib.unified_diff(
        source.splitlines(keepends=True),
        patched.splitlines(keepends=True),
        f"a/{name}",
        f"b/{name}",
    )
    return patched, "".join(diff)


def copy_mdlarc(mdlarc_dir: Path, root: Path) -> str:
    """Copy the checkout's code into ``root`` (not its data or runs) and patch the copy; returns
    the diff. Every file is patched in memory first, so a failure writes nothing."""
    missing = [name for name in REQUIRED if not (mdlarc_dir / name).is_file()]
    if missing:
        raise DataError(f"{mdlarc_dir}: no {missing[0]} (--mdlarc-dir: a checkout of mdlARC)")
    patched = {name: patch_file(name, (mdlarc_dir / name).read_text()) for name in PATCHES}
    shutil.copytree(mdlarc_dir, root, ignore=shutil.ignore_patterns(*SKIPPED), dirs_exist_ok=True)
    for name, (text, _) in patched.items():
        (root / name).write_text(text)
    return "".join(diff for _, diff in patched.values())
