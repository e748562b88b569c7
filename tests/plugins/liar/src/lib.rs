//! A plugin whose honest mode is checkable from outside and whose other modes each break the
//! contract in one quiet way, so that tests can check that `ember plugin check` catches each lie
//! and names the check it breaks.
//!
//! Honest mode computes a static embedding: the mean, over the tokens the pooling mask keeps,
//! of the rows of the float32 table `embeddings.word_embeddings.weight` in the model directory's
//! `model.safetensors` (a test writes the table and computes the reference from the same
//! numbers). `EMBER_LIAR`, read when a model loads, picks the lie:
//!
//! - `honest` (default): the above;
//! - `constant`: the same vector for every input;
//! - `unmasked`: averages every position, padding included (ignores the attention mask);
//! - `promptful`: pools under the attention mask even when the host sends a pooling mask that
//!   leaves the prompt out (ignores `pooling_mask`);
//! - `nan`: the last value of the last row of every batch is NaN;
//! - `int8`: claims int8 in `describe()` and perturbs its weights (vectors at cosine about
//!   0.98 to the honest ones), as if quantisation error excused it;
//! - `noisy`: adds a little noise that changes from call to call (not deterministic);
//! - `racy`: allows concurrent calls, but a call that overlaps another returns garbage (as a
//!   plugin sharing a scratch buffer between calls would);
//! - `overrun`: answers inputs of more than 1024 tokens with an internal error, as an ONNX
//!   graph run past its position table does, instead of refusing them as invalid input;
//! - `states`: its token states (the table's row of each live token when honest) are scaled,
//!   so that they no longer pool to its embeddings.
//!
//! The same model, exported as a plugin of ember's plugin ABI 3.0 (without token states), is
//! the `liar30` test plugin (tests/plugins/liar30): tests check that it still loads and serves.
//!
//! `EMBER_LIAR_RECORD`, when set, names a file to which every `embed_tokens` call appends one
//! line, `rows seq_len kept`, where `kept` counts the positions the attention mask keeps, so
//! that tests can check the batches the host forms (`BATCH_SIZES`, `MAX_BATCH_TOKENS`).

mod model;

ember_plugin_api::export_plugin!(model::Liar);
