// The C++ side of the bridge: a CTranslate2 encoder behind a few functions that cxx can call.
#pragma once

#include <memory>

#include "ctranslate2/encoder.h"
#include "rust/cxx.h"

namespace ember_ct2 {

// A CTranslate2 encoder (a pool of replicas that share the weights) and what it was loaded
// with.
class Encoder {
public:
  Encoder(std::unique_ptr<ctranslate2::Encoder> pool,
          std::unique_ptr<ctranslate2::Encoder> whole,
          std::string compute_type);

  // Runs one batch of right-padded rows as the parts that end at `part_ends` (the last at
  // `rows`), all at once on the pool's replicas: `ids` and `type_ids` are `rows * seq`
  // (`type_ids` empty for a model without segment embeddings), `lengths` `rows`. The states
  // of the first `longest` positions of every row go to `states`, `rows * longest * hidden`
  // floats (a row's positions past its part's longest row are left as they are). A call of
  // one part with `all_threads` runs on the replica of every thread, where there is one.
  // Throws if the engine's states have another shape.
  void forward(rust::Slice<const uint32_t> ids,
               rust::Slice<const uint32_t> type_ids,
               rust::Slice<const uint32_t> lengths,
               size_t seq,
               rust::Slice<const size_t> part_ends,
               bool all_threads,
               rust::Slice<float> states) const;

  // The compute type CTranslate2 chose for the weights and the arithmetic.
  rust::String compute_type() const;

  // How many calls the pool runs at once.
  size_t replicas() const;

  // Whether there is a replica that computes on every thread (a CPU of several threads).
  bool has_whole() const;

private:
  std::unique_ptr<ctranslate2::Encoder> _pool;
  // One replica on all threads, sharing the pool's weights; none on a GPU or one thread.
  std::unique_ptr<ctranslate2::Encoder> _whole;
  std::string _compute_type;
};

// Loads the CTranslate2 model in `path` on `device` ("cpu" or "cuda").
std::unique_ptr<Encoder> load_encoder(rust::Str path,
                                      rust::Str device,
                                      int32_t device_index,
                                      rust::Str compute_type,
                                      size_t threads);

// Number of CUDA devices CTranslate2 can use (0 without a driver).
int32_t cuda_device_count();

// Whether `device` computes `compute_type` ("int8", "float16", "bfloat16") natively.
bool supports(rust::Str device, int32_t device_index, rust::Str compute_type);

}  // namespace ember_ct2
