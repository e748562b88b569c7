#include "ember-ctranslate2/src/bridge.h"

#include <stdexcept>

#include "ctranslate2/devices.h"
#include "ember-ctranslate2/src/ffi.rs.h"

namespace ember_ct2 {

Encoder::Encoder(std::unique_ptr<ctranslate2::Encoder> pool, std::string compute_type)
  : _pool(std::move(pool)), _compute_type(std::move(compute_type)) {}

EncoderOutput Encoder::forward(rust::Slice<const uint32_t> ids,
                               rust::Slice<const uint32_t> type_ids,
                               rust::Slice<const uint32_t> lengths,
                               size_t seq) const {
  const size_t rows = lengths.size();
  // No type ids: the model has one embedding table (DistilBERT) and takes ids alone.
  const bool typed = !type_ids.empty();
  if (ids.size() != rows * seq || (typed && type_ids.size() != rows * seq))
    throw std::invalid_argument("ids and type ids must hold rows * seq values");
  std::vector<std::vector<size_t>> batch(rows), types(rows);
  for (size_t r = 0; r < rows; ++r) {
    const size_t len = lengths[r];
    if (len == 0 || len > seq)
      throw std::invalid_argument("row " + std::to_string(r) + " has length "
                                  + std::to_string(len) + " (sequence length "
                                  + std::to_string(seq) + ")");
    batch[r].assign(ids.begin() + r * seq, ids.begin() + r * seq + len);
    if (typed)
      types[r].assign(type_ids.begin() + r * seq, type_ids.begin() + r * seq + len);
  }
  if (!typed)
    types.clear();
  // The pool runs the batch on its worker thread; get() rethrows its exception, if any.
  ctranslate2::EncoderForwardOutput out =
      _pool->forward_batch_async(std::move(batch), std::move(types)).get();
  const ctranslate2::StorageView states =
      out.last_hidden_state.to(ctranslate2::Device::CPU).to_float32();
  if (states.rank() != 3)
    throw std::runtime_error("the encoder returned a tensor of rank "
                             + std::to_string(states.rank()) + " instead of 3");
  EncoderOutput result;
  result.rows = static_cast<size_t>(states.dim(0));
  result.seq = static_cast<size_t>(states.dim(1));
  result.hidden = static_cast<size_t>(states.dim(2));
  const float* data = states.data<float>();
  result.states.reserve(states.size());
  for (size_t i = 0; i < static_cast<size_t>(states.size()); ++i)
    result.states.push_back(data[i]);
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
