"""Training on CPU: TRL's fused LM head in tiles that stay on the heap.

TRL's SFT, KTO and DPO trainers project the hidden states through the LM head in tiles of
`trl.kernels.chunked_logprob.TOKEN_CHUNK_SIZE` (4096) tokens x the vocabulary. For the shipped model's 2048-word
vocabulary a tile is a 32 MiB float32 buffer, at glibc's largest mmap threshold: every call mapped fresh memory
and faulted each page in (30 SFT steps on the loop's M1 data: 945k minor page faults, system CPU 8.7% of user).
1024-token tiles (8 MiB) come from the heap and are reused: 158k faults, 1.4%, the same loss. The weights differ
in the last bits (at most 2.7e-7 after 30 steps: the smaller matrix products round differently).
"""

from __future__ import annotations

CPU_TOKEN_TILE = 1024


def heap_sized_tiles() -> None:
    """Set TRL's token tile to `CPU_TOKEN_TILE` (once per process; a TRL without the constant is left alone)."""
    try:
        from trl.kernels import chunked_logprob
    except ImportError:
        return
    if getattr(chunked_logprob, "TOKEN_CHUNK_SIZE", 0) > CPU_TOKEN_TILE:
        chunked_logprob.TOKEN_CHUNK_SIZE = CPU_TOKEN_TILE
