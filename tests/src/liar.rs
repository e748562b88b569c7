//! Model directories for the liar test plugin (`tests/plugins/liar`), and the static
//! embeddings its honest mode must compute, found here from the same numbers and independently
//! of the plugin: the mean of the word-embedding rows of `[CLS] words... [SEP]`.

use crate::fixture;
use serde_json::json;
use std::path::PathBuf;

/// Width of the liar's vectors.
pub const LIAR_DIM: usize = 16;

/// A small deterministic pseudo-random generator (values in [-1, 1)).
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> f32 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((self.0 >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }
}

/// A model directory for the liar plugin and the table it was written with.
pub struct LiarModel {
    /// The model directory (removed on drop).
    pub dir: PathBuf,
    vocab: Vec<String>,
    table: Vec<f32>,
}

impl LiarModel {
    /// Writes a model directory named after `name`: the tokenizer and configs of the
    /// tiny-bert-cls fixture, a `model.safetensors` with a random word-embedding table, and,
    /// when `reference` is set, a `reference.json` of three texts computed here.
    pub fn create(name: &str, reference: bool) -> LiarModel {
        let src = fixture("tiny-bert-cls");
        let dir = std::env::temp_dir().join(format!("ember-liar-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("1_Pooling")).unwrap();
        for f in [
            "config.json",
            "config_sentence_transformers.json",
            "modules.json",
            "sentence_bert_config.json",
            "special_tokens_map.json",
            "tokenizer.json",
            "tokenizer_config.json",
            "vocab.txt",
        ] {
            std::fs::copy(src.join(f), dir.join(f)).unwrap();
        }
        // What the liar computes: mean pooling (tiny-bert-cls's own pooling is CLS).
        std::fs::write(
            dir.join("1_Pooling/config.json"),
            json!({"word_embedding_dimension": LIAR_DIM, "pooling_mode_mean_tokens": true})
                .to_string(),
        )
        .unwrap();
        let vocab: Vec<String> = std::fs::read_to_string(src.join("vocab.txt"))
            .unwrap()
            .lines()
            .map(str::to_string)
            .collect();
        let mut rng = Lcg(42);
        let table: Vec<f32> = (0..vocab.len() * LIAR_DIM).map(|_| rng.next()).collect();
        // safetensors: 8-byte little-endian header length, the JSON header, the raw data.
        let header = json!({
            "embeddings.word_embeddings.weight": {
                "dtype": "F32",
                "shape": [vocab.len(), LIAR_DIM],
                "data_offsets": [0, table.len() * 4],
            }
        })
        .to_string();
        let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
        bytes.extend(header.as_bytes());
        bytes.extend(table.iter().flat_map(|x| x.to_le_bytes()));
        std::fs::write(dir.join("model.safetensors"), bytes).unwrap();
        let model = LiarModel { dir, vocab, table };
        if reference {
            let texts = ["hello world", "the quick brown fox", "a cat sat on the mat"];
            let embeddings: Vec<Vec<f32>> = texts.iter().map(|t| model.expected(t)).collect();
            std::fs::write(
                model.dir.join("reference.json"),
                json!({"texts": texts, "embeddings": embeddings}).to_string(),
            )
            .unwrap();
        }
        model
    }

    /// The honest (unnormalised) embedding of `text`: lowercase words separated by single
    /// spaces, each a whole entry of vocab.txt.
    pub fn expected(&self, text: &str) -> Vec<f32> {
        let states = self.expected_states(text);
        let mut v = [0f32; LIAR_DIM];
        for row in &states {
            v.iter_mut().zip(row).for_each(|(o, x)| *o += x);
        }
        v.iter().map(|x| x / states.len() as f32).collect()
    }

    /// The honest token states of `text` (as [`LiarModel::expected`] reads it): the table's
    /// row of each of `[CLS] words... [SEP]`.
    pub fn expected_states(&self, text: &str) -> Vec<Vec<f32>> {
        let id = |w: &str| {
            self.vocab
                .iter()
                .position(|v| v == w)
                .unwrap_or_else(|| panic!("{w} is not in vocab.txt"))
        };
        let mut ids = vec![id("[CLS]")];
        ids.extend(text.split(' ').map(id));
        ids.push(id("[SEP]"));
        ids.iter()
            .map(|i| self.table[i * LIAR_DIM..(i + 1) * LIAR_DIM].to_vec())
            .collect()
    }
}

impl Drop for LiarModel {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
