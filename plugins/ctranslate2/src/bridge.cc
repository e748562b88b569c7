#include "ember-ctranslate2/src/bridge.h"

#include <algorithm>
#include <exception>
#include <future>
#include <stdexcept>

#include "ctranslate2/devices.h"
#include "ember-ctranslate2/src/ffi.rs.h"

namespace ember_ct2 {

Encoder::Encoder(std::unique_ptr<ctranslate2::Encoder> pool,
                 std::unique_ptr<ctranslate2::Encoder> whole,
                 std::string compute_type)
  : _pool(std::move(pool)), _whole(std::move(whole)), _compute_type(std::move(compute_type)) {}

namespace {

// Copies one part's states into the call's buffer (see Encoder::forward).
void copy_states(ctranslate2::EncoderForwardOutput&& result,
                 size_t first_row,
                 size_t rows,
                 size_t longest,
                 size_t stride,
                 size_t hidden,
                 rust::Slice<float> states_out) {
  // float32 where the states are (a GPU converts its half precision faster than the host),
  // then to the host, each step only when needed; all of it (the frees too) on the states'
  // own device, which is not necessarily this thread's current one.
  const ctranslate2::ScopedDeviceSetter on_their_device(result.last_hidden_state.device(),
                                                        result.last_hidden_state.device_index());
  const ctranslate2::EncoderForwardOutput out = std::move(result);
  const ctranslate2::StorageView* states = &out.last_hidden_state;
  ctranslate2::StorageView converted(states->device()), moved(ctranslate2::Device::CPU);
  if (states->dtype() != ctranslate2::DataType::FLOAT32) {
    converted = states->to_float32();
    states = &converted;
  }
  if (states->device() != ctranslate2::Device::CPU) {
    moved = states->to(ctranslate2::Device::CPU);
    states = &moved;
  }
  if (states->rank() != 3)
    throw std::runtime_error("the encoder returned a tensor of rank "
                             + std::to_string(states->rank()) + " instead of 3");
  const size_t got_rows = static_cast<size_t>(states->dim(0));
  const size_t got_seq = static_cast<size_t>(states->dim(1));
  const size_t got_hidden = static_cast<size_t>(states->dim(2));
  // The first `longest` positions of each row (CTranslate2 may pad further), each row at its
  // place in the caller's rows * stride * hidden buffer (positions past `longest` stay as
  // they are: no row of this part has a token there).
  if (got_rows != rows || got_seq < longest || got_hidden != hidden)
    throw std::runtime_error("the encoder returned states [" + std::to_string(got_rows) + ", "
                             + std::to_string(got_seq) + ", " + std::to_string(got_hidden)
                             + "] for " + std::to_string(rows) + " rows of up to "
                             + std::to_string(longest) + " tokens and hidden size "
                             + std::to_string(hidden));
  const float* data = states->data<float>();
  for (size_t r = 0; r < rows; ++r)
    std::copy_n(data + r * got_seq * hidden, longest * hidden,
                states_out.data() + (first_row + r) * stride * hidden);
}

}  // namespace

void Encoder::forward(rust::Slice<const uint32_t> ids,
                      rust::Slice<const uint32_t> type_ids,
                      rust::Slice<const uint32_t> lengths,
                      size_t seq,
                      rust::Slice<const size_t> part_ends,
                      bool all_threads,
                      rust::Slice<float> states_out) const {
  const size_t rows = lengths.size();
  // No type ids: the model has one embedding table (DistilBERT) and takes ids alone.
  const bool typed = !type_ids.empty();
  if (ids.size() != rows * seq || (typed && type_ids.size() != rows * seq))
    throw std::invalid_argument("ids and type ids must hold rows * seq values");
  if (part_ends.empty() || part_ends[part_ends.size() - 1] != rows)
    throw std::invalid_argument("the parts must end at the last row");
  size_t longest = 0;
  for (size_t r = 0; r < rows; ++r) {
    const size_t len = lengths[r];
    if (len == 0 || len > seq)
      throw std::invalid_argument("row " + std::to_string(r) + " has length "
                                  + std::to_string(len) + " (sequence length "
                                  + std::to_string(seq) + ")");
    longest = std::max(longest, len);
  }
  if (states_out.size() % std::max<size_t>(rows * longest, 1) != 0)
    throw std::invalid_argument("the states buffer must hold rows * longest * hidden values");
  const size_t hidden = states_out.size() / std::max<size_t>(rows * longest, 1);
  size_t start = 0;
  for (const size_t stop : part_ends) {
    if (stop <= start || stop > rows)
      throw std::invalid_argument("the parts must be consecutive, non-empty ranges of rows");
    start = stop;
  }
  // Every part goes to the pool at once; each replica takes the next one waiting. A call of
  // one part asked to run on every thread goes to the encoder of all threads, if there is one.
  ctranslate2::Encoder& pool = all_threads && _whole && part_ends.size() == 1 ? *_whole : *_pool;
  struct Part {
    size_t start, stop, longest;
    std::future<ctranslate2::EncoderForwardOutput> out;
  };
  std::vector<Part> parts;
  parts.reserve(part_ends.size());
  start = 0;
  try {
    for (const size_t stop : part_ends) {
      std::vector<std::vector<size_t>> batch(stop - start), types(typed ? stop - start : 0);
      size_t part_longest = 0;
      for (size_t r = start; r < stop; ++r) {
        const size_t len = lengths[r];
        part_longest = std::max(part_longest, len);
        batch[r - start].assign(ids.begin() + r * seq, ids.begin() + r * seq + len);
        if (typed)
          types[r - start].assign(type_ids.begin() + r * seq, type_ids.begin() + r * seq + len);
      }
      parts.push_back(Part{start, stop, part_longest,
                           pool.forward_batch_async(std::move(batch), std::move(types))});
      start = stop;
    }
  } catch (...) {
    // None of the parts already posted outlives the call.
    for (Part& part : parts)
      part.out.wait();
    throw;
  }
  // Every part is waited for before the first failure is rethrown, so that none still runs
  // when the call returns.
  std::exception_ptr failed;
  for (Part& part : parts) {
    try {
      copy_states(part.out.get(), part.start, part.stop - part.start, part.longest, longest,
                  hidden, states_out);
    } catch (...) {
      if (!failed)
        failed = std::current_exception();
    }
  }
  if (failed)
    std::rethrow_exception(failed);
}

rust::String Encoder::compute_type() const {
  return rust::String(_compute_type);
}

size_t Encoder::replicas() const {
  return _pool->num_replicas();
}

bool Encoder::has_whole() const {
  return static_cast<bool>(_whole);
}

std::unique_ptr<Encoder> load_encoder(rust::Str path,
                                      rust::Str device,
                                      int32_t device_index,
                                      rust::Str compute_type,
                                      size_t threads) {
  const std::string model_path(path);
  const auto dev = ctranslate2::str_to_device(std::string(device));
  const auto requested = ctranslate2::str_to_compute_type(std::string(compute_type));
  ctranslate2::models::ModelLoader loader(model_path);
  loader.device = dev;
  loader.device_indices = {device_index};
  loader.compute_type = requested;
  ctranslate2::ReplicaPoolConfig config;
  if (dev == ctranslate2::Device::CPU) {
    // On a CPU, one replica per thread, each computing on its own thread: calls of a few rows
    // spend more on waking and joining OpenMP threads than they gain from them (one text of
    // all-MiniLM-L6-v2 ran 3x faster on one thread than on two), while replicas that share
    // the weights run the parts of a call side by side.
    loader.num_replicas_per_device = std::max<size_t>(threads, 1);
    config.num_threads_per_replica = 1;
  } else {
    loader.num_replicas_per_device = 1;
    config.num_threads_per_replica = threads;
  }
  auto pool = std::make_unique<ctranslate2::Encoder>(loader, config);
  const auto& model = pool->get_first_replica().model();
  // And one replica on every thread, on the same weights, for the long rows that gain from
  // OpenMP's threads (512 tokens: 1.4x faster on two threads than on one).
  std::unique_ptr<ctranslate2::Encoder> whole;
  if (dev == ctranslate2::Device::CPU && threads > 1) {
    ctranslate2::ReplicaPoolConfig all;
    all.num_threads_per_replica = threads;
    whole = std::make_unique<ctranslate2::Encoder>(model, all);
  }
  auto effective = ctranslate2::compute_type_to_str(model->effective_compute_type());
  return std::make_unique<Encoder>(std::move(pool), std::move(whole), std::move(effective));
}

int32_t cuda_device_count() {
  try {
    return ctranslate2::get_device_count(ctranslate2::Device::CUDA);
  } catch (const std::exception&) {
    return 0;
  }
}

bool supports(rust::Str device, int32_t device_index, rust::Str compute_type) {
  const auto dev = ctranslate2::str_to_device(std::string(device));
  const std::string type(compute_type);
  if (type == "int8")
    return ctranslate2::mayiuse_int8(dev, device_index);
  if (type == "float16")
    return ctranslate2::mayiuse_float16(dev, device_index);
  if (type == "bfloat16")
    return ctranslate2::mayiuse_bfloat16(dev, device_index);
  return type == "float32";
}

}  // namespace ember_ct2
