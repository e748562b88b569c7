//! The rotary encoders' configs (GTE, Nomic BERT): the variants the torch backend does not
//! compute are refused at load naming their key, and Nomic BERT reads its own keys (GPT-2's
//! names, as nomic-ai publishes them) or transformers' alike.

mod common;

use common::{fixture, tokens, try_load};
use ember_plugin_api::{ErrorCode, ModelKind, Pooling};
use serde_json::{json, Value};
use std::path::PathBuf;

/// A copy of fixture `name`'s weights with its config changed by `change`, removed on drop.
struct Changed(PathBuf);

impl Changed {
    fn new(name: &str, tag: &str, change: impl FnOnce(&mut Value)) -> Changed {
        let from = fixture(name);
        let dir = std::env::temp_dir().join(format!(
            "ember-torch-configs-{}-{name}-{tag}",
            std::process::id()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::copy(
            from.join("model.safetensors"),
            dir.join("model.safetensors"),
        )
        .unwrap();
        let mut cfg: Value =
            serde_json::from_slice(&std::fs::read(from.join("config.json")).unwrap()).unwrap();
        change(&mut cfg);
        std::fs::write(dir.join("config.json"), cfg.to_string()).unwrap();
        Changed(dir)
    }
}

impl Drop for Changed {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The error loading `name` with `key` set to `value` in its config.
fn refusal(name: &str, key: &str, value: Value) -> String {
    let changed = Changed::new(name, key, |cfg| cfg[key] = value);
    match try_load(&changed.0, ModelKind::Embed, Pooling::Mean, "", 1) {
        Ok(_) => panic!("{name} with {key} loaded"),
        Err(e) => {
            assert_eq!(e.code, ErrorCode::Unsupported, "{}", e.message);
            e.message.to_string()
        }
    }
}

#[test]
fn nomic_variants_ember_does_not_compute_are_refused_by_name() {
    for (key, value) in [
        ("causal", json!(true)),
        ("prenorm", json!(true)),
        ("parallel_block", json!(true)),
        ("rotary_emb_interleaved", json!(true)),
        ("use_rms_norm", json!(true)),
        ("rotary_emb_fraction", json!(0.5)),
        ("rotary_scaling_factor", json!(2.0)),
        ("activation_function", json!("gelu")),
        ("activation_function", json!("glu")),
        // Absent, Nomic's config defaults these to what the published models are not.
        ("rotary_emb_fraction", Value::Null),
        ("rotary_emb_base", Value::Null),
        ("activation_function", Value::Null),
    ] {
        let message = refusal("tiny-nomic", key, value);
        assert!(message.contains(key), "{key}: {message}");
    }
}

#[test]
fn gte_rope_scaling_is_refused_by_name() {
    let message = refusal(
        "tiny-gte",
        "rope_scaling",
        json!({"type": "ntk", "factor": 2.0}),
    );
    assert!(message.contains("ntk"), "{message}");
}

#[test]
fn nomic_reads_transformers_keys_as_it_reads_its_own() {
    let own = try_load(
        &fixture("tiny-nomic"),
        ModelKind::Embed,
        Pooling::Mean,
        "",
        1,
    )
    .unwrap();
    let native = Changed::new("tiny-nomic", "native", |cfg| {
        let c = cfg.clone();
        *cfg = json!({
            "model_type": "nomic_bert",
            "vocab_size": c["vocab_size"],
            "hidden_size": c["n_embd"],
            "num_hidden_layers": c["n_layer"],
            "num_attention_heads": c["n_head"],
            "intermediate_size": c["n_inner"],
            "hidden_act": "silu",
            "max_position_embeddings": c["n_positions"],
            "type_vocab_size": c["type_vocab_size"],
            "layer_norm_eps": c["layer_norm_epsilon"],
            "rope_parameters": {"rope_type": "default", "rope_theta": c["rotary_emb_base"]},
        });
    });
    let theirs = try_load(&native.0, ModelKind::Embed, Pooling::Mean, "", 1).unwrap();
    let batch = tokens(12, &[12, 7]);
    let (a, b) = (
        own.embed_tokens(&batch).unwrap(),
        theirs.embed_tokens(&batch).unwrap(),
    );
    assert_eq!(a, b);
    // A different rotary base computes something else: the base is read, not assumed.
    let based = Changed::new("tiny-nomic", "base", |cfg| {
        cfg["rotary_emb_base"] = json!(10000)
    });
    let other = try_load(&based.0, ModelKind::Embed, Pooling::Mean, "", 1).unwrap();
    assert_ne!(other.embed_tokens(&batch).unwrap(), a);
}
