use super::*;
use serde_json::json;

#[test]
fn kinds_follow_infinity() {
    let rr = json!({"architectures": ["BertForSequenceClassification"], "id2label": {"0": "L"}});
    assert_eq!(kind_of(&rr), ModelKind::Rerank);
    let cls2 = json!({"architectures": ["BertForSequenceClassification"], "num_labels": 2});
    assert_eq!(kind_of(&cls2), ModelKind::Classify);
    // An empty id2label is no labels given: num_labels (else one) decides.
    let empty = json!({"architectures": ["BertForSequenceClassification"], "id2label": {}});
    assert_eq!(kind_of(&empty), ModelKind::Rerank);
    assert_eq!(kind_of(&json!({"vision_config": {}})), ModelKind::Clip);
    assert_eq!(
        kind_of(&json!({"architectures": ["BertModel"]})),
        ModelKind::Embed
    );
}

#[test]
fn classes_read_id2label_or_name_them_as_transformers_does() {
    let named = json!({"id2label": {"1": "pos", "0": "neg"},
                       "problem_type": "multi_label_classification"});
    let c = Classes::from_config(&named).unwrap();
    assert_eq!(c.labels, ["neg", "pos"]);
    assert!(c.multi_label);
    let counted = Classes::from_config(&json!({"num_labels": 3})).unwrap();
    assert_eq!(counted.labels, ["LABEL_0", "LABEL_1", "LABEL_2"]);
    assert!(!counted.multi_label);
    let gap = json!({"id2label": {"0": "a", "2": "b"}});
    let e = Classes::from_config(&gap).unwrap_err();
    assert!(e.contains("\"2\"") && e.contains("0..2"), "{e}");
}

#[test]
fn both_pooling_formats() {
    assert_eq!(
        pooling_of(&json!({"pooling_mode": "lasttoken"})).unwrap(),
        Pooling::LastToken
    );
    let classic = json!({"pooling_mode_cls_token": false, "pooling_mode_mean_tokens": true});
    assert_eq!(pooling_of(&classic).unwrap(), Pooling::Mean);
    assert!(
        pooling_of(&json!({"pooling_mode_cls_token": true, "pooling_mode_max_tokens": true}))
            .unwrap_err()
            .contains("several")
    );
    assert!(pooling_of(&json!({"pooling_mode": "weird"}))
        .unwrap_err()
        .contains("weird"));
}

#[test]
fn manifest_of_a_directory() {
    let dir = std::env::temp_dir().join(format!("ember-manifest-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("1_Pooling")).unwrap();
    let w = |f: &str, v: Value| std::fs::write(dir.join(f), v.to_string()).unwrap();
    w(
        "config.json",
        json!({"architectures": ["XLMRobertaModel"], "model_type": "xlm-roberta",
        "hidden_size": 8, "max_position_embeddings": 514}),
    );
    w(
        "modules.json",
        json!([
        {"path": "", "type": "sentence_transformers.models.Transformer"},
        {"path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
        {"path": "2_Normalize", "type": "sentence_transformers.models.Normalize"}]),
    );
    w(
        "1_Pooling/config.json",
        json!({"pooling_mode_cls_token": true}),
    );
    w(
        "tokenizer_config.json",
        json!({"model_max_length": 1000000000000000019u64}),
    );
    let m = read("x", &dir).unwrap();
    assert_eq!(m.abi.pooling, Pooling::Cls);
    assert_eq!(m.abi.max_input_tokens, 512);
    assert!(m.normalized_by_model);
    w("sentence_bert_config.json", json!({"max_seq_length": 128}));
    assert_eq!(read("x", &dir).unwrap().abi.max_input_tokens, 128);
    // include_prompt: false reaches the plugin only when there is a prompt to leave out.
    assert!(m.abi.include_prompt);
    w(
        "1_Pooling/config.json",
        json!({"pooling_mode": "mean", "include_prompt": false}),
    );
    assert!(read("x", &dir).unwrap().abi.include_prompt, "no prompts");
    w(
        "config_sentence_transformers.json",
        json!({"prompts": {"query": "Represent: ", "document": ""}}),
    );
    let m = read("x", &dir).unwrap();
    assert_eq!(m.abi.pooling, Pooling::Mean);
    assert!(!m.abi.include_prompt);
    // Nomic BERT's config names its sizes as GPT-2 does.
    w(
        "config.json",
        json!({"architectures": ["NomicBertModel"], "model_type": "nomic_bert",
        "n_embd": 8, "n_positions": 300}),
    );
    w("sentence_bert_config.json", json!({"max_seq_length": 8192}));
    let m = read("x", &dir).unwrap();
    assert_eq!((m.abi.max_input_tokens, m.abi.hidden_size), (300, 8));
    std::fs::remove_file(dir.join("config.json")).unwrap();
    assert!(read("x", &dir)
        .unwrap_err()
        .to_string()
        .contains("config.json"));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_causal_qwen3_is_a_yes_no_reranker_unless_it_has_a_pipeline() {
    let dir = std::env::temp_dir().join(format!("ember-manifest-lm-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("1_Pooling")).unwrap();
    let w = |f: &str, v: Value| std::fs::write(dir.join(f), v.to_string()).unwrap();
    w(
        "config.json",
        json!({"architectures": ["Qwen3ForCausalLM"], "model_type": "qwen3",
        "hidden_size": 8, "max_position_embeddings": 512}),
    );
    // Qwen3-Reranker: no sentence-transformers files.
    let m = read("x", &dir).unwrap();
    assert_eq!(m.abi.kind, ModelKind::Rerank);
    assert_eq!(m.pair_template, Some(PairTemplate::qwen3_reranker()));
    // Qwen3-Embedding: the same architecture with a pipeline.
    w(
        "modules.json",
        json!([
        {"path": "", "type": "sentence_transformers.models.Transformer"},
        {"path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}]),
    );
    w(
        "1_Pooling/config.json",
        json!({"pooling_mode": "lasttoken"}),
    );
    let m = read("x", &dir).unwrap();
    assert_eq!(m.abi.kind, ModelKind::Embed);
    assert_eq!(m.abi.pooling, Pooling::LastToken);
    assert_eq!(m.pair_template, None);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn splade_pooling_reads_its_strategy_and_activation() {
    let default = splade_of(&json!({})).unwrap();
    assert_eq!(
        default,
        SparseReduction {
            sum: false,
            log1p_twice: false
        }
    );
    let v1 = json!({"pooling_strategy": "sum", "activation_function": "log1p_relu"});
    assert_eq!(
        splade_of(&v1).unwrap(),
        SparseReduction {
            sum: true,
            log1p_twice: true
        }
    );
    let bad = splade_of(&json!({"pooling_strategy": "mean"})).unwrap_err();
    assert!(bad.contains("pooling_strategy \"mean\""), "{bad}");
}

#[test]
fn a_splade_pipeline_is_an_mlm_transformer_then_splade_pooling_and_nothing_else() {
    let dir = std::env::temp_dir().join(format!("ember-manifest-splade-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("1_SpladePooling")).unwrap();
    let w = |f: &str, v: Value| std::fs::write(dir.join(f), v.to_string()).unwrap();
    w(
        "config.json",
        json!({"architectures": ["BertForMaskedLM"], "model_type": "bert",
        "hidden_size": 8, "max_position_embeddings": 64}),
    );
    let mlm = json!({"path": "", "type": "sentence_transformers.sparse_encoder.modules.mlm_transformer.MLMTransformer"});
    let splade = json!({"path": "1_SpladePooling", "type": "sentence_transformers.sparse_encoder.modules.splade_pooling.SpladePooling"});
    let pooling = json!({"path": "1_Pooling", "type": "sentence_transformers.models.Pooling"});
    let normalize =
        json!({"path": "2_Normalize", "type": "sentence_transformers.models.Normalize"});
    w(
        "1_SpladePooling/config.json",
        json!({"pooling_strategy": "max"}),
    );
    w("modules.json", json!([mlm, splade]));
    w(
        "config_sentence_transformers.json",
        json!({"max_active_dims": 64}),
    );
    let m = read("x", &dir).unwrap();
    assert_eq!(
        m.sparse,
        Some(SparseReduction {
            sum: false,
            log1p_twice: false
        })
    );
    assert_eq!(m.sparse_top_k, Some(64));
    for (modules, needle) in [
        (json!([mlm, pooling]), "follows MLMTransformer"),
        (json!([mlm, splade, normalize]), "follows SpladePooling"),
        (json!([splade]), "must follow the (MLM) transformer"),
    ] {
        w("modules.json", modules);
        let e = read("x", &dir).unwrap_err().to_string();
        assert!(e.contains(needle), "{e}");
    }
    w("modules.json", json!([mlm, splade]));
    w(
        "config_sentence_transformers.json",
        json!({"max_active_dims": 0}),
    );
    let e = read("x", &dir).unwrap_err().to_string();
    assert!(
        e.contains("max_active_dims must be a positive integer"),
        "{e}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
