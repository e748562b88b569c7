//! A loaded model as the engine calls it: the plugin's handle, then the pipeline's Dense
//! modules.

use crate::models::dense::Head;
use crate::plugin::Plugin;
use ember_plugin_api::{
    EmbeddingBatch, Extensions31, LoadRequest, LoadedModel, LogitBatch, ModelBox, Outputs,
    PairBatch, PixelBatch, PluginError, ScoreBatch, SparseBatch, SparseReduction, TokenBatch,
    TokenStates,
};

/// A loaded model as the engine sees it.
pub struct ModelRunner {
    handle: ModelBox,
    /// What the model reported at load (its width after the head).
    pub described: LoadedModel,
    /// The outputs it offers besides its kind's own (none from a plugin of ABI 3.0).
    pub outputs: Outputs,
    /// The plugin's functions of ABI 3.1, if it has them.
    extensions: Option<Extensions31>,
    /// How a SPLADE model's logits are reduced (its `SpladePooling`), for sparse calls.
    sparse: Option<SparseReduction>,
    /// The pipeline's Dense modules, applied to what the plugin returns.
    head: Head,
}

impl ModelRunner {
    /// Wraps a model handle (from a plugin, or built in-process with the SDK).
    pub fn new(handle: ModelBox) -> ModelRunner {
        let described = handle.describe();
        ModelRunner {
            handle,
            described,
            outputs: Outputs::NONE,
            extensions: None,
            sparse: None,
            head: Head::default(),
        }
    }

    /// Loads a model of `plugin`, with the plugin's functions of the minors after 3.0.
    pub fn load(plugin: &Plugin, request: &LoadRequest) -> Result<ModelRunner, PluginError> {
        plugin
            .load_model(request)
            .map(|handle| ModelRunner::new(handle).with_extensions(plugin.extensions))
    }

    /// Gives the runner the functions of ABI 3.1 of the plugin that made its handle (none
    /// for a plugin of 3.0), and learns the outputs the model offers through them.
    fn with_extensions(mut self, extensions: Option<Extensions31>) -> ModelRunner {
        self.outputs = extensions.map_or(Outputs::NONE, |e| (e.outputs)(&self.handle));
        self.extensions = extensions;
        self
    }

    /// Makes sparse calls reduce as a SPLADE pipeline's `SpladePooling` says (none: the model
    /// is not a SPLADE model).
    pub fn with_sparse(mut self, reduction: Option<SparseReduction>) -> ModelRunner {
        self.sparse = reduction;
        self
    }

    /// Adds the sentence-transformers Dense modules after the plugin's pooled output; refuses
    /// a head whose first module does not read the plugin's width.
    pub fn with_head(mut self, head: Head) -> Result<ModelRunner, String> {
        let pooled = self.described.embedding_dim as usize;
        head.check(pooled)?;
        self.described.embedding_dim = head.output_dim(pooled) as u32;
        self.head = head;
        Ok(self)
    }

    /// Applies the head to each row of a plugin's output (a malformed output is passed on
    /// for the caller's shape check).
    fn through_head(&self, out: EmbeddingBatch) -> EmbeddingBatch {
        let dim = out.dim as usize;
        if self.head.is_empty() || dim == 0 || out.values.len() != out.rows as usize * dim {
            return out;
        }
        let mut values = Vec::with_capacity(out.rows as usize * self.head.output_dim(dim));
        for row in out.values.chunks_exact(dim) {
            values.extend(self.head.apply(row));
        }
        EmbeddingBatch {
            rows: out.rows,
            dim: self.described.embedding_dim,
            values: values.into(),
        }
    }

    /// Embeds a token batch.
    pub fn embed_tokens(&self, batch: &TokenBatch) -> Result<EmbeddingBatch, PluginError> {
        let out = self.handle.embed_tokens(batch).into_result()?;
        Ok(self.through_head(out))
    }

    /// The plugin's pooled vectors of a token batch, before the Dense modules.
    pub fn embed_tokens_pooled(&self, batch: &TokenBatch) -> Result<EmbeddingBatch, PluginError> {
        self.handle.embed_tokens(batch).into_result()
    }

    /// Scores query–document pairs.
    pub fn score_pairs(&self, batch: &PairBatch) -> Result<ScoreBatch, PluginError> {
        self.handle.score_pairs(batch).into_result()
    }

    /// Every label's logit for each row of a token batch (classifiers).
    pub fn classify_tokens(&self, batch: &TokenBatch) -> Result<LogitBatch, PluginError> {
        self.handle.classify_tokens(batch).into_result()
    }

    /// Each row's state of every live token, before pooling and the Dense modules.
    pub fn token_states(&self, batch: &TokenBatch) -> Result<TokenStates, PluginError> {
        match &self.extensions {
            Some(e) => (e.token_states)(&self.handle, batch).into_result(),
            None => Err(PluginError::unsupported(
                "the plugin was built against ember's plugin ABI 3.0, which has no token states",
            )),
        }
    }

    /// Each row's SPLADE weights, reduced as the model's pipeline says.
    pub fn sparse(&self, batch: &TokenBatch) -> Result<SparseBatch, PluginError> {
        let Some(reduction) = self.sparse else {
            return Err(PluginError::unsupported(
                "the model is not a SPLADE model served by a plugin that computes sparse weights",
            ));
        };
        self.sparse_as(batch, reduction)
    }

    /// Each row's sparse weights reduced as `reduction` says (the conformance checker tries
    /// each reduction).
    pub fn sparse_as(
        &self,
        batch: &TokenBatch,
        reduction: SparseReduction,
    ) -> Result<SparseBatch, PluginError> {
        match &self.extensions {
            Some(e) => (e.sparse)(&self.handle, batch, reduction).into_result(),
            None => Err(PluginError::unsupported(
                "the plugin was built against ember's plugin ABI 3.0, which has no sparse weights",
            )),
        }
    }

    /// Embeds preprocessed images.
    pub fn embed_pixels(&self, batch: &PixelBatch) -> Result<EmbeddingBatch, PluginError> {
        let out = self.handle.embed_pixels(batch).into_result()?;
        Ok(self.through_head(out))
    }
}
