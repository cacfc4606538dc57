"""llama.cpp (through llama-cpp-python 0.3.36) as the tests' reference peer.

    llama(path, **kw)            a ``llama_cpp.Llama`` on one thread, quiet
    llama_cpp_logits(path, ids)  (len(ids), n_vocab) float32 logits of every position
    mtmd_encode(llm, mmproj)     (n_tokens, embeddings) of one 336x336 image through libmtmd
"""
from __future__ import annotations

import ctypes

import numpy as np


def llama(path, **kw):
    import llama_cpp

    kw = {"n_ctx": 128, "n_threads": 1, "verbose": False, **kw}
    return llama_cpp.Llama(model_path=str(path), **kw)


def llama_cpp_logits(path, ids) -> np.ndarray:
    m = llama(path, logits_all=True)
    m.eval(ids)
    return np.array(m.scores[: len(ids)])


def mtmd_encode(llm_path, mmproj_path) -> tuple[int, np.ndarray]:
    """(n_tokens, flat float32 embeddings) of one fixed 336x336 image through libmtmd."""
    from llama_cpp import mtmd_cpp as M

    model = llama(llm_path, n_ctx=1024)
    p = M.mtmd_context_params_default()
    p.use_gpu, p.n_threads, p.print_timings, p.warmup = False, 1, False, False
    ctx = M.mtmd_init_from_file(str(mmproj_path).encode(), model._model.model, p)
    assert ctx, "libmtmd refused the mmproj"
    try:
        assert M.mtmd_support_vision(ctx)
        img = (np.arange(336 * 336 * 3) % 251).astype(np.uint8)
        bm = M.mtmd_bitmap_init(336, 336, img.ctypes.data_as(ctypes.POINTER(ctypes.c_uint8)))
        chunks = M.mtmd_input_chunks_init()
        text = b"USER: " + M.mtmd_default_marker() + b"\nwhat is it? ASSISTANT:"
        inp = M.mtmd_input_text(text=text, text_len=len(text), add_special=True, parse_special=True)
        assert M.mtmd_tokenize(ctx, chunks, ctypes.byref(inp), (M.mtmd_bitmap_p_ctypes * 1)(bm), 1) == 0
        images = [M.mtmd_input_chunks_get(chunks, i) for i in range(M.mtmd_input_chunks_size(chunks))]
        images = [c for c in images if M.mtmd_input_chunk_get_type(c) != 0]
        assert len(images) == 1
        n = M.mtmd_input_chunk_get_n_tokens(images[0])
        assert M.mtmd_encode_chunk(ctx, images[0]) == 0
        emb = np.ctypeslib.as_array(M.mtmd_get_output_embd(ctx), shape=(n * model.n_embd(),)).copy()
        M.mtmd_input_chunks_free(chunks)
        M.mtmd_bitmap_free(bm)
        return n, emb
    finally:
        M.mtmd_free(ctx)
