"""Checkpoint readers and the LLaVA → GGUF converter.

    from gguflite.convert import convert_llava
    llm_path, mmproj_path = convert_llava(model_dir, vision_tower=None, outdir=".", outtype="f16")

Modules: ``safetensors`` (strict lazy reader), ``torchbin`` (restricted unpickler for
PyTorch .bin), ``checkpoint`` (a folder → lazy tensors, sharded or not), ``layouts``
(config.json → which LLaVA family), ``tokenizer`` (SentencePiece → tokenizer.ggml.*),
``llava`` (the conversion plan), ``output`` (streamed, verified, atomic writing), ``cli`` (``gguflite convert-llava``).  Importing this package
imports numpy only.
"""
from .llava import OUTTYPES, convert_llava  # noqa: F401
