#include "ember-ctranslate2/src/bridge.h"

#include <algorithm>
#include <stdexcept>

#include "ctranslate2/devices.h"
#include "ember-ctranslate2/src/ffi.rs.h"

namespace ember_ct2 {

Encoder::Encoder(std::unique_ptr<ctranslate2::Encoder> pool, std::string compute_type)
  : _pool(std::move(pool)), _compute_type(std::move(compute_type)) {}

EncoderOutput Encoder::forward(rust::Slice<const uint32_t> ids,
                               rust::Slice<const uint32_t> type_ids,
                               rust::Slice<const uint32_t> lengths,
                               size_t seq,
                               rust::Slice<float> states_out) const {
  const size_t rows = lengths.size();
  // No type ids: the model has one embedding table (DistilBERT) and takes ids alone.
  const bool typed = !type_ids.empty();
  if (ids.size() != rows * seq || (typed && type_ids.size() != rows * seq))
    throw std::invalid_argument("ids and type ids must hold rows * seq values");
  std::vector<std::vector<size_t>> batch(rows), types(rows);
  size_t longest = 0;
  for (size_t r = 0; r < rows; ++r) {
    const size_t len = lengths[r];
    if (len == 0 || len > seq)
      throw std::invalid_argument("row " + std::to_string(r) + " has length "
                                  + std::to_string(len) + " (sequence length "
                                  + std::to_string(seq) + ")");
    longest = std::max(longest, len);
    batch[r].assign(ids.begin() + r * seq, ids.begin() + r * seq + len);
    if (typed)
      types[r].assign(type_ids.begin() + r * seq, type_ids.begin() + r * seq + len);
  }
  if (!typed)
    types.clear();
  // The pool runs the batch on its worker thread; get() rethrows its exception, if any.
  ctranslate2::EncoderForwardOutput out =
      _pool->forward_batch_async(std::move(batch), std::move(types)).get();
  // float32 where the states are (a GPU converts its half precision faster than the host),
  // then to the host, each step only when needed.
  const ctranslate2::StorageView* states = &out.last_hidden_state;
  ctranslate2::StorageView converted(states->device()), moved(ctranslate2::Device::CPU);
  if (states->dtype() != ctranslate2::DataType::FLOAT32) {
    // On the states' own GPU: this thread's current device is not necessarily theirs.
    const ctranslate2::ScopedDeviceSetter on_their_device(states->device(),
                                                          states->device_index());
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
  EncoderOutput result;
  result.rows = static_cast<size_t>(states->dim(0));
  result.seq = static_cast<size_t>(states->dim(1));
  result.hidden = static_cast<size_t>(states->dim(2));
  // The first `longest` positions of each row (CTranslate2 may pad further), copied once
  // into the caller's rows * longest * hidden buffer.
  if (result.rows != rows || result.seq < longest
      || states_out.size() != rows * longest * result.hidden)
    throw std::runtime_error("the encoder returned states [" + std::to_string(result.rows)
                             + ", " + std::to_string(result.seq) + ", "
                             + std::to_string(result.hidden) + "] for "
                             + std::to_string(rows) + " rows of up to "
                             + std::to_string(longest) + " tokens");
  const float* data = states->data<float>();
  const size_t row_values = longest * result.hidden;
  for (size_t r = 0; r < rows; ++r)
    std::copy_n(data + r * result.seq * result.hidden, row_values,
                states_out.data() + r * row_values);
  result.seq = longest;
  return result;
}

rust::String Encoder::compute_type() const {
  return rust::String(_compute_type);
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
  loader.num_replicas_per_device = 1;
  ctranslate2::ReplicaPoolConfig config;
  config.num_threads_per_replica = threads;
  auto pool = std::make_unique<ctranslate2::Encoder>(loader, config);
  const auto& model = *pool->get_first_replica().model();
  auto effective = ctranslate2::compute_type_to_str(model.effective_compute_type());
  return std::make_unique<Encoder>(std::move(pool), std::move(effective));
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
